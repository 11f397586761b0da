#!/usr/bin/env bash
# Re-vendor the pinned NiiVue build into bratseg/serving/static/niivue/:
#
#     scripts/vendor_niivue.sh            # the pinned version below
#
# NiiVue (https://github.com/niivue/niivue, BSD-2-Clause) is the WebGL2 NIfTI viewer behind
# the result viewer. Its self-contained UMD build (dependencies included) is served by the
# Flask app itself, so the viewer works offline and nothing comes from a CDN. Needs npm and
# its registry; checks the tarball against the registry's pinned integrity hash and the
# licence the package declares. To move to another version, change VERSION and INTEGRITY
# (`npm view @niivue/niivue@X dist.integrity`), run this, and check the viewer tests pass.
set -euo pipefail

VERSION=0.69.0
INTEGRITY=sha512-YMjQvJgD1W2b7DuoxkwlC4VxbrgIePRJ5qyQzXKxi2v2MBVg285P/CIQyg46oDDGDIcaNlbd+MhtO/edMbXJkA==

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$here/bratseg/serving/static/niivue"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "@niivue/niivue@$VERSION" >/dev/null)
tarball="$tmp/niivue-niivue-$VERSION.tgz"
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$actual" != "$INTEGRITY" ]; then
    echo "vendor_niivue.sh: integrity mismatch for @niivue/niivue@$VERSION: $actual" >&2
    exit 1
fi
tar -xzf "$tarball" -C "$tmp" package/package.json package/dist/niivue.umd.js
license="$(node -p "require('$tmp/package/package.json').license")"
if [ "$license" != "BSD-2-Clause" ]; then
    echo "vendor_niivue.sh: @niivue/niivue@$VERSION declares licence $license, not BSD-2-Clause" >&2
    exit 1
fi
# The npm package carries no licence file; LICENSE beside the build is the repository's.
if [ ! -f "$dest/LICENSE" ]; then
    echo "vendor_niivue.sh: $dest/LICENSE is missing (NiiVue's BSD-2-Clause text must ship with it)" >&2
    exit 1
fi

mkdir -p "$dest"
cp "$tmp/package/dist/niivue.umd.js" "$dest/niivue.umd.js"
echo "$VERSION" >"$dest/VERSION"
(cd "$dest" && sha256sum niivue.umd.js >niivue.umd.js.sha256)
echo "vendored @niivue/niivue@$VERSION into ${dest#"$here"/}: $(wc -c <"$dest/niivue.umd.js") bytes"
