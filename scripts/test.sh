#!/usr/bin/env bash
# Set up and run every check on a fresh machine: the README's test command.
# Installs the package with its dev extras, then runs ruff, mypy and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Real servers for the tests, from Debian: nginx, redis-server, mosquitto, haproxy, memcached,
# pgbouncer, openssh-server (sshd), mariadb-server,
# apache2, gunicorn and python3-uvicorn (the web servers' tests run them with Debian's
# /usr/bin/python3, whose dist-packages hold them), php-fpm, tomcat10 (its JVM with it),
# postfix, unbound and squid,
# prometheus (it scrapes the exporter) and postgresql (its initdb lives in
# /usr/lib/postgresql/VERSION/bin, where the tests find it; pg_ctlcluster, from
# postgresql-common, says it is installed), and chromium, which renders the HTML
# reports headless for the report tests; nftables, iptables (its legacy backend) and
# conntrack for the path tests (NAT and firewall rules in namespaces the tests make;
# conntrack(8) is the reference);
# systemd for systemd-analyze, which checks the shipped unit.
# Packages install without starting their services (no systemd here; policy-rc.d
# forbids it elsewhere): the tests start their own instances on free ports.
# The servers live in /usr/sbin, which a minimal PATH lacks (their tests would skip).
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
need=()
for pair in ip:iproute2 prlimit:util-linux cc:gcc nginx:nginx redis-server:redis-server mosquitto:mosquitto haproxy:haproxy memcached:memcached pgbouncer:pgbouncer sshd:openssh-server mariadbd:mariadb-server apache2:apache2 gunicorn:gunicorn postfix:postfix unbound:unbound squid:squid pg_ctlcluster:postgresql prometheus:prometheus chromium:chromium script:bsdutils nft:nftables iptables-legacy:iptables conntrack:conntrack systemd-analyze:systemd; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
[ -d /usr/lib/python3/dist-packages/uvicorn ] || need+=(python3-uvicorn)
compgen -G "/usr/sbin/php-fpm*" >/dev/null || need+=(php-fpm)
[ -d /usr/share/tomcat10/bin ] || need+=(tomcat10)
if ((${#need[@]})); then
  ours=""  # a policy-rc.d already there is the machine's: used, never removed
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && ours=1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  if [ -n "$ours" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
python3 -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "Running pip as the 'root'" || true
ruff check .
mypy
python3 -m pytest -q "$@"
