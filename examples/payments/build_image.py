"""Build the payments example as an OCI image from source, reproducibly, without a Docker daemon.

    python examples/payments/build_image.py --version 2.4.1
    python examples/payments/build_image.py --version 2.4.2 --bad      # /health answers 500
    python examples/payments/build_image.py --version 2.4.3 --faulty   # every 2nd GET / and /pay answers 500
    python examples/payments/build_image.py --version 2.4.1 --push 127.0.0.1:18500/payments:2.4.1
    python examples/payments/build_image.py --version 2.4.1 --out var/images/payments-2.4.1  # OCI layout

Prints the image's manifest digest: the same source and options give the same digest, byte for byte, on
any machine with the same Go release. `--label` changes the bytes without changing the version (to show an
immutability violation), as build.py's does for the zipapp.

Why this way: there is no Docker daemon here, and no base image to pull (nothing may be pulled), so a
Dockerfile cannot be built. The app is therefore image/main.go, the same behaviour as app.py in Go's
standard library, compiled static (CGO off, no libc) with what the build decides baked in by the linker:
a binary that needs nothing but a kernel, alone in one layer, as `FROM scratch` would give. Without a
builder in between, every byte of the image is ours to fix: the binary (-trimpath, no build id or VCS
stamp, a pinned target), the layer (one ustar entry, mode 0755, owner 0:0, mtime 0), the config and the
manifest (canonical JSON, `created` at the epoch). So the digest a pipeline promotes names the whole image,
and anyone can rebuild it from the commit and get that digest again. The image runs as 65534:65534
(nobody), never as root.
"""

import argparse
import asyncio
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from shared.platform.credentials import MissingCredential
from shared.contracts.limits import VERSION_PATTERN
from shared.oci import (OCI_INDEX, OCI_MANIFEST, ImageReference, Registry, RegistryError, RegistryUnavailable,
                        image_manifest, parse_reference)
from shared.platform.settings import Settings

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "image"
REPO = HERE.parents[1]
BINARY_CACHE = REPO / ".cache" / "payments-image"
GO_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "promote" / "go"
"""Go's build cache, per machine rather than per checkout: a fresh clone (CI) compiles net/http once per
machine, not once per clone (~30 s)."""
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
EPOCH = "1970-01-01T00:00:00Z"
PORT = 8080
NOBODY = "65534:65534"


@dataclass(frozen=True)
class Image:
    """A built image: its config, its layers (uncompressed tars) and its manifest, as bytes."""

    version: str
    config: bytes
    layers: tuple[bytes, ...]
    manifest: bytes

    @property
    def digest(self) -> str:
        """The manifest digest: what a registry, intake and the pipeline name the image by."""
        return _digest(self.manifest)


class BuildFailed(Exception):
    """The Go toolchain is missing or refused the source (the message carries its output)."""


def build_image(version: str, *, bad: bool = False, faulty: bool = False, label: str = "",
                cache: Path = BINARY_CACHE) -> Image:
    """Compile the app (or take it from `cache`) and assemble its one-layer image."""
    if not re.fullmatch(VERSION_PATTERN, version):
        raise ValueError(f"version {version!r}: 1-128 characters without spaces, slashes or control characters")
    layer = layer_of(compile_app(version, bad=bad, faulty=faulty, label=label, cache=cache))
    config = config_of(version, layer)
    return Image(version, config, (layer,), image_manifest(config, [(layer, LAYER_TAR)]))


def compile_app(version: str, *, bad: bool, faulty: bool, label: str, cache: Path = BINARY_CACHE) -> bytes:
    """The static linux/amd64 binary of image/main.go with these build-time values.

    Cached under `cache` by the hash of the source, the Go release and the flags: the same inputs give the
    same bytes anyway, so a rebuild (every test, every demo run) need not run the toolchain at all. A cold
    compile of net/http takes ~30 s; even with Go's own cache warm, each variant is another link.
    """
    ldflags = " ".join(["-s -w -buildid=", _define("version", version), _define("broken", str(bad).lower()),
                        _define("faulty", str(faulty).lower()), _define("label", label)])
    command = [_go(), "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags]
    key = hashlib.sha256(json.dumps([_go_version(), command[1:], _source_hash()]).encode()).hexdigest()
    cached = cache / key
    if cached.is_file():
        return cached.read_bytes()
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f".{key}.{os.getpid()}"
    done = subprocess.run([*command, "-o", str(partial), "."], cwd=SOURCE, env=_go_environment(),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildFailed(f"go build failed ({done.returncode}):\n{done.stderr.strip()}")
    partial.replace(cached)  # atomic: a concurrent build never reads half a binary
    return cached.read_bytes()


def layer_of(binary: bytes) -> bytes:
    """One uncompressed tar holding /payments, executable, owned by root, dated at the epoch."""
    entry = tarfile.TarInfo("payments")
    entry.size, entry.mode, entry.mtime = len(binary), 0o755, 0
    entry.uid = entry.gid = 0
    entry.uname = entry.gname = ""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        archive.addfile(entry, io.BytesIO(binary))
    return buffer.getvalue()


def config_of(version: str, layer: bytes) -> bytes:
    """The image config (canonical JSON): how to run /payments, as whom, and the layer's diff id."""
    config = {
        "architecture": "amd64", "os": "linux", "created": EPOCH,
        "config": {
            "Entrypoint": ["/payments"], "Env": [f"PORT={PORT}"], "ExposedPorts": {f"{PORT}/tcp": {}},
            "User": NOBODY, "WorkingDir": "/",
            "Labels": {"org.opencontainers.image.title": "payments", "org.opencontainers.image.version": version,
                       "org.opencontainers.image.source": "examples/payments/image"},
        },
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        "history": [{"created": EPOCH, "created_by": "examples/payments/build_image.py: go build (static) /payments"}],
    }
    return _canonical(config)


def write_layout(image: Image, out: Path) -> None:
    """Write `image` as an OCI image layout in `out` (its index.json names only this image, by its version)."""
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in (image.config, *image.layers, image.manifest):
        (blobs / _digest(blob).removeprefix("sha256:")).write_bytes(blob)
    described = {"mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.manifest),
                 "annotations": {"org.opencontainers.image.ref.name": image.version}}
    (out / "oci-layout").write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))
    (out / "index.json").write_bytes(_canonical({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                 "manifests": [described]}))


async def push(image: Image, reference: str, settings: Settings) -> str:
    """Push the blobs and the manifest to `reference` as the registry user `ci`; the manifest digest."""
    ref = parse_reference(reference)
    async with Registry.from_settings(settings, "ci") as registry:
        return await upload(registry, image, ref)


async def upload(registry: Registry, image: Image, ref: ImageReference) -> str:
    """Push the blobs, then the manifest under `ref`'s tag (or its digest, which must be the image's)."""
    if ref.digest is not None and ref.digest != image.digest:
        raise ValueError(f"{ref} names another digest than the image's {image.digest}")
    for blob in (image.config, *image.layers):
        await registry.push_blob(ref, blob)
    return await registry.push_manifest(ref, image.manifest, OCI_MANIFEST, reference=ref.tag or image.digest)


def _define(name: str, value: str) -> str:
    """`-X main.name=value` quoted for go's flag splitting (which quotes with ' or " and escapes nothing)."""
    quote = "'" if "'" not in value else '"'
    if quote in value or "\n" in value:
        raise ValueError(f"{name} {value!r}: may not hold both kinds of quote, nor a line break")
    return f"-X {quote}main.{name}={value}{quote}"


def _go() -> str:
    found = shutil.which("go")
    if found is None:
        raise BuildFailed("no Go toolchain on PATH (`go`): the image's app is compiled from image/main.go")
    return found


def _go_environment() -> dict[str, str]:
    """The environment of `go build`: the target pinned, caches in the repository, no network, no user config."""
    return {**os.environ, "CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": "amd64", "GOAMD64": "v1",
            "GOTOOLCHAIN": "local", "GOFLAGS": "", "GOENV": "off", "GOWORK": "off", "GOPROXY": "off",
            "GOEXPERIMENT": "", "GOCACHE": str(GO_CACHE / "build"), "GOMODCACHE": str(GO_CACHE / "mod"),
            "GOPATH": str(GO_CACHE / "path")}


def _go_version() -> str:
    """The Go release that compiles (another release gives other bytes, so it is part of the cache key)."""
    done = subprocess.run([_go(), "env", "GOVERSION"], env=_go_environment(), capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(SOURCE.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + _digest(path.read_bytes()).encode() + b"\0")
    return digest.hexdigest()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def main() -> None:
    """Command line: build one image, print its digest; write it as a layout and push it if asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True)
    parser.add_argument("--bad", action="store_true", help="build a version whose health check fails")
    parser.add_argument("--faulty", action="store_true",
                        help="build a version that is healthy but answers 500 to every second GET / and /pay")
    parser.add_argument("--label", default="", help="extra bytes baked in (same version, other digest)")
    parser.add_argument("--out", type=Path, help="write an OCI image layout to this directory")
    parser.add_argument("--push", metavar="REFERENCE", help="push to registry/repository:tag as the user ci")
    args = parser.parse_args()
    try:
        image = build_image(args.version, bad=args.bad, faulty=args.faulty, label=args.label)
    except (ValueError, BuildFailed) as error:
        parser.exit(1, f"{error}\n")
    if args.out is not None:
        write_layout(image, args.out)
    if args.push is not None:
        try:
            asyncio.run(push(image, args.push, Settings()))
        except (ValueError, RegistryError, RegistryUnavailable, MissingCredential) as error:
            parser.exit(1, f"{error}\n")
    print(image.digest)


if __name__ == "__main__":
    main()
