# The helper image of the kind node's local-path-provisioner (e2e/kind/node-image.sh builds
# it): the pod the provisioner starts to make or remove a volume's directory runs
# `/bin/sh /script/setup` or `/script/teardown`, which call mkdir and rm. Like kind's
# local-path-helper image: those three programs from Debian trixie (BASE_IMAGE, the node's
# root file system) with the libraries they load, on an empty image.
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS stage
# Each file is copied under its directory's real path (/bin, /lib and /lib64 are links into
# /usr on trixie), the link itself where it is one, then the file it points to; then the
# top-level links. The loader named is amd64's, the node image's architecture.
RUN set -eu; \
    mkdir -p /stage; \
    for program in sh rm mkdir; do \
      path="$(command -v "${program}")"; \
      for file in "${path}" $(/lib64/ld-linux-x86-64.so.2 --list "$(readlink -f "${path}")" | \
          awk '$1 ~ /^\// {print $1} $3 ~ /^\// {print $3}'); do \
        file="$(readlink -f "$(dirname "${file}")")/$(basename "${file}")"; \
        cp -a --parents "${file}" /stage/; \
        [ ! -L "${file}" ] || cp -a --parents "$(readlink -f "${file}")" /stage/; \
      done; \
    done; \
    cp -a /bin /sbin /lib /lib64 /stage/; \
    mkdir -p /stage/tmp; \
    chmod 1777 /stage/tmp; \
    chroot /stage /bin/sh -c 'mkdir -p /tmp/check && rm -r /tmp/check'

FROM scratch
COPY --from=stage /stage/ /
CMD ["/bin/sh"]
