module dra-driver.local/e2e/kind/pause

go 1.26.0
