#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (run as root): apt packages, the
# QEMU system user, a virtual environment that sees Debian's SELinux bindings, and
# svirt itself in editable mode. Each step is skipped when already done, so a second
# run costs well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  selinux-policy-default policycoreutils policycoreutils-python-utils selinux-utils
  python3-selinux python3-setools python3-audit setools semodule-utils checkpolicy
  auditd attr acl qemu-system-x86 qemu-utils python3-venv
)
# Interop suite with the real libvirt 9.0 (tests/interop/, issue 12): libvirtd,
# virtlogd and virsh, started by the tests in a private mount namespace.
APT_PACKAGES+=(libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients)
# Fleet ledger (issue 15): etcd for the tests' real 3-member cluster, etcdctl, and the
# etcd3gw client (Debian's build; the venv sees it through system site-packages); openssl
# makes the certificates of the TLS test.
APT_PACKAGES+=(etcd-server etcd-client python3-etcd3gw openssl)
# The SELinux-enforcing lab (scripts/lab, issue 10): its initramfs is busybox-static and
# its images are made with mkfs.ext4 -d; the kernel package is fetched into the lab's
# cache by scripts/lab, never installed. The audit search core is compiled with cc.
APT_PACKAGES+=(busybox-static e2fsprogs gcc libc6-dev)
# Tools (issue 14): svirt(1) is read with man-db (groff renders it) and the completions
# are loaded by bash-completion and zsh; the tests render the page and drive both shells.
APT_PACKAGES+=(man-db groff-base bash-completion zsh)
# svirt verify --html (issue 14): tests/test_verify_html.py opens the page in Debian's
# headless Chromium and checks the screenshot's cells against verify --json.
APT_PACKAGES+=(chromium)
VENV=.venv
QEMU_USER=svirt-qemu

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The unprivileged identity QEMU runs as (svirt.conf `user`/`group`).
if ! getent passwd "$QEMU_USER" >/dev/null; then
  getent group "$QEMU_USER" >/dev/null || groupadd --system "$QEMU_USER"
  useradd --system --gid "$QEMU_USER" --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin "$QEMU_USER"
fi

# A venv from Debian's Python with system site-packages: `selinux`, `selinux.audit2why`,
# `setools` and `auparse` exist only as Debian packages built for /usr/bin/python3.
if [ ! -x "$VENV/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
stamp="$VENV/.svirt-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
  echo "$want" > "$stamp"
fi

# --- audit search: the compiled core (src/svirt/audit/_scan.c -> _scan.so, loaded with
# ctypes by svirt.audit.native). Rebuilt only when the source is newer than the library.
SCAN_SRC=src/svirt/audit/_scan.c
SCAN_LIB=src/svirt/audit/_scan.so
if [ ! -f "$SCAN_LIB" ] || [ "$SCAN_SRC" -nt "$SCAN_LIB" ]; then
  cc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$SCAN_LIB.tmp" "$SCAN_SRC" -ldl
  mv "$SCAN_LIB.tmp" "$SCAN_LIB"
fi

# --- tools (issue 14): the man page and the bash and zsh completions, generated from the
# installed svirt's parser (argparse-manpage, shtab) and put where man, bash-completion
# and zsh look (/usr/local/share/...). Only files that differ are written, so a second
# run changes nothing; `make man-completion` runs the same step.
"$VENV/bin/python" -m svirt.cli.docs install
