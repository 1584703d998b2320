#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine, and does nothing when it is
# already there: PostgreSQL 15 with TimescaleDB (Apache edition, built from Debian's next release's
# source package), Mosquitto, and the Python virtual environment.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_MAJOR="${PG_MAJOR:-15}"
TSDB_SUITE="${TSDB_SUITE:-trixie}"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
BUILD_DIR="${TSDB_BUILD_DIR:-$ROOT/.data/build}"

log() { printf '[provision] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The Debian mirror this machine already uses, read from its own apt configuration, so no host
# name is ever written into the repository.
debian_mirror() {
    local uri=""
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        uri="$(awk '
            /^URIs:/ { uris = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i !~ /-(security|updates|backports)$/) main = 1 }
            /^[[:space:]]*$/ { if (main && uris != "" && uris !~ /security/) { print uris; exit } uris = ""; main = 0 }
            END { if (main && uris != "" && uris !~ /security/) print uris }
        ' /etc/apt/sources.list.d/*.sources | head -n1)"
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri="$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)"
    fi
    [ -n "$uri" ] || { log "cannot find a Debian mirror in the apt configuration"; exit 1; }
    printf '%s\n' "$uri"
}

install_system_packages() {
    apt_install "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" postgresql-client \
        mosquitto mosquitto-clients dpkg-dev cmake gcc make libssl-dev openssl docker-compose
}

timescaledb_installed() {
    local pg_config="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config"
    [ -x "$pg_config" ] || pg_config="pg_config"
    local sharedir pkglibdir
    sharedir="$("$pg_config" --sharedir)"
    pkglibdir="$("$pg_config" --pkglibdir)"
    [ -f "$sharedir/extension/timescaledb.control" ] && compgen -G "$pkglibdir/timescaledb*.so" >/dev/null
}

install_timescaledb() {
    if timescaledb_installed; then
        return 0
    fi
    local list=/etc/apt/sources.list.d/alatau-timescaledb-src.list
    if [ ! -f "$list" ]; then
        local mirror
        mirror="$(debian_mirror)"
        log "adding $TSDB_SUITE as a source-only suite from this machine's mirror"
        echo "deb-src $mirror $TSDB_SUITE main" | as_root tee "$list" >/dev/null
    fi
    as_root apt-get update -qq
    rm -rf "$BUILD_DIR"
    mkdir -p "$BUILD_DIR"
    log "fetching the timescaledb source package"
    (cd "$BUILD_DIR" && apt-get source -qq --download-only timescaledb >/dev/null && dpkg-source -x --no-check ./*.dsc src >/dev/null)
    log "building TimescaleDB (Apache edition) against PostgreSQL $PG_MAJOR"
    (
        cd "$BUILD_DIR/src"
        ./bootstrap -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
            -DGENERATE_DOWNGRADE_SCRIPT=OFF -DPG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config" >/dev/null
        cd build
        make -j"$(nproc)" >/dev/null
        as_root make install >/dev/null
    )
    timescaledb_installed || { log "TimescaleDB did not install"; exit 1; }
    rm -rf "$BUILD_DIR"
    log "TimescaleDB installed"
}

install_python_env() {
    local stamp="$VENV/.provisioned"
    if [ -f "$stamp" ] && [ "$stamp" -nt "$ROOT/pyproject.toml" ]; then
        return 0
    fi
    log "creating the Python environment in $VENV"
    if ! "$PYTHON" -c "import venv, ensurepip" 2>/dev/null; then
        apt_install python3-venv
    fi
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    local pip_log="$VENV/pip-install.log"
    if ! { "$VENV/bin/python" -m pip install -q --upgrade pip &&
        "$VENV/bin/python" -m pip install -q -e "$ROOT[dev]"; } >"$pip_log" 2>&1; then
        cat "$pip_log" >&2
        log "pip install failed"
        exit 1
    fi
    touch "$stamp"
}

# The console's libraries (Leaflet, uPlot, Swagger UI) from the npm registry, copied into the
# git-ignored api/static/vendor/; redone only when frontend/package-lock.json changes. No
# package needs an install script (swagger-ui-dist's analytics dependency has one): none runs.
install_frontend() {
    local stamp="$ROOT/api/static/vendor/.installed"
    if [ -f "$stamp" ] && [ "$stamp" -nt "$ROOT/frontend/package-lock.json" ]; then
        return 0
    fi
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    log "installing the console's front-end libraries from npm"
    (cd "$ROOT/frontend" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && npm run --silent build) >&2
    touch "$stamp"
}

# Debian's Chromium for the console's browser tests (Playwright drives it; it downloads none).
install_browser() {
    apt_install chromium chromium-driver
}

# libfaketime for make test-clock-ahead (the suite with the clock a month and a year ahead).
install_clock_tools() {
    apt_install faketime
}

# A local certificate authority and the broker's certificate for make run's TLS listener
# (.data/tls, git-ignored); kept once made, so devices can go on trusting ca.crt.
make_local_ca() {
    [ -f "$ROOT/.data/tls/server.crt" ] && return 0
    log "making a local CA and the broker's TLS certificate in .data/tls"
    (cd "$ROOT" && "$VENV/bin/python" -m stack.tls "$ROOT/.data/tls")
}

main() {
    install_system_packages
    install_timescaledb
    install_python_env
    install_frontend
    install_browser
    install_clock_tools
    make_local_ca
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then main "$@"; fi
