module dra-driver.local/e2e/kind/capfilter

go 1.26.0
