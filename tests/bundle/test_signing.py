"""Ed25519 signing of bundle manifests, checked by the CLI and by the runtime when the app asks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from qwen_edge.bundle import manifest as manifest_mod
from qwen_edge.bundle.archive import package_bundle, unpack
from qwen_edge.cli import main
from qwen_edge.errors import BundleError
from qwen_edge.runtime import load
from qwen_edge.bundle.signing import SignatureError, generate_keypair, sign_bundle, verify_bundle_signature


@pytest.fixture
def signed(bundles, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundles("qwen2", "int4"), bundle)
    keys = tmp_path / "keys"
    assert main(["keygen", "-o", str(keys), "-q"]) == 0
    assert main(["sign", str(bundle), "--key", str(keys / "private.pem"), "-q"]) == 0
    return bundle, keys


def test_signed_bundle_verifies_and_stays_intact(signed, capsys):
    bundle, keys = signed
    capsys.readouterr()
    assert (bundle / manifest_mod.SIGNATURE_NAME).is_file()
    assert manifest_mod.check_integrity(bundle) == []  # the signature is not an "extra file"
    assert main(["verify", str(bundle), "--public-key", str(keys / "public.pem"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["signed"] is True
    assert (keys / "private.pem").stat().st_mode & 0o077 == 0
    gen = load(bundle, verify_signature=keys / "public.pem")
    assert len(gen.generate("def f(x):", max_new_tokens=2, stop_token_ids=()).token_ids) == 2
    # Raw 32-byte keys and PEM text work too.
    from qwen_edge.bundle.signing import load_public_key
    from cryptography.hazmat.primitives import serialization

    key = load_public_key(keys / "public.pem")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    verify_bundle_signature(bundle, raw)
    verify_bundle_signature(bundle, (keys / "public.pem").read_text())


def _flip_weight(bundle):
    data = bytearray((bundle / "model.onnx.data").read_bytes())
    data[100] ^= 1
    (bundle / "model.onnx.data").write_bytes(bytes(data))


def _edit_manifest(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"]["model.onnx.data"]["sha256"] = "0" * 64
    (bundle / "manifest.json").write_text(manifest_mod.dumps(m))


@pytest.mark.parametrize("tamper,error,match", [
    (lambda b, k: _flip_weight(b), BundleError, "model.onnx.data"),
    (lambda b, k: _edit_manifest(b), SignatureError, "does not match"),
    (lambda b, k: (b / "manifest.sig").unlink(), SignatureError, "not signed"),
    (lambda b, k: (b / "manifest.sig").write_text("{"), SignatureError, "malformed"),
    (lambda b, k: sign_bundle(b, generate_keypair()[0]), SignatureError, "another key"),
])
def test_tampering_is_caught_when_the_app_asks(signed, capsys, tamper, error, match):
    bundle, keys = signed
    tamper(bundle, keys)
    with pytest.raises(error, match=match):
        load(bundle, verify_signature=keys / "public.pem")
    code = main(["verify", str(bundle), "--public-key", str(keys / "public.pem")])
    err = capsys.readouterr().err
    assert code == 5 and err.count("\n") == 1 and match in err


def test_signature_travels_in_the_archive(signed, tmp_path):
    bundle, keys = signed
    archive = package_bundle(bundle, tmp_path / "dist")
    unpacked = unpack(archive, tmp_path / "app")
    verify_bundle_signature(unpacked, keys / "public.pem")


def test_signing_refuses_a_damaged_bundle(bundles, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundles("qwen2", "fp32"), bundle)
    _flip_weight(bundle)
    with pytest.raises(BundleError, match="integrity"):
        sign_bundle(bundle, generate_keypair()[0])


def test_runtime_imports_cryptography_only_when_asked(signed):
    bundle, keys = signed
    code = textwrap.dedent(f"""
        import sys
        from qwen_edge.runtime import load
        load({str(bundle)!r})
        assert 'cryptography' not in sys.modules, 'imported without being asked'
        load({str(bundle)!r}, verify_signature={str(keys / 'public.pem')!r})
        assert 'cryptography' in sys.modules
        print('ok')
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
