"""Model references, the cache, hash checks, and unpickling MegaDetector-style checkpoints."""
from __future__ import annotations

import errno
import hashlib
import pickle
import socket
import urllib.error
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from gpu_batch.worker import loader
from gpu_batch.worker.loader import KEPT_BLOB_VERSIONS, KnownModel, ModelLoadError, load_model, resolve_model_file
from gpu_batch.worker.make_test_checkpoint import MD_CLASS_NAMES
from gpu_batch.worker.yolov5_modules import Detect, Model


def test_test_checkpoint_is_pickled_under_yolov5_names(checkpoint: Path) -> None:
    with zipfile.ZipFile(checkpoint) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    for ref in (b"models.yolo\nModel", b"models.yolo\nDetect", b"models.common\nConv", b"models.common\nC3",
                b"models.common\nSPPF"):
        assert ref in data
    assert b"gpu_batch" not in data  # nothing of ours in the pickle: MegaDetector can read it


def test_load_model_fuses_and_sets_letterbox_stride(checkpoint: Path) -> None:
    m = load_model(checkpoint, device="cpu")
    assert isinstance(m.network, Model) and not m.half and m.stride == 64 and m.image_size == 1280
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.network.modules())  # fused like MegaDetector
    assert m.network.names == MD_CLASS_NAMES
    detect = m.network.model[-1]
    assert isinstance(detect, Detect) and detect.nl == 4 and detect.nc == 3
    with torch.inference_mode():
        out = m.network(torch.rand(1, 3, 256, 320))[0]
    assert out.shape[-1] == 8 and out.dtype == torch.float32


class Evil:  # pickled as gpu_batch.tests.test_loader.Evil: not on the allow-list
    pass


def test_unknown_class_in_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path, pickle_module=pickle)
    with pytest.raises(ModelLoadError, match="does not provide"):
        load_model(path)


def test_corrupt_checkpoint_is_model_load_error(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        load_model(path)


def test_known_model_offline_tells_user_to_pass_a_local_path(tmp_path: Path) -> None:
    tried: list[str] = []
    waited: list[float] = []

    def offline(url: str, dest: Path) -> None:
        tried.append(url)
        dest.write_bytes(b"half")
        raise urllib.error.URLError("no route to host")

    with pytest.raises(ModelLoadError) as info:
        resolve_model_file("MDV5A", cache_dir=tmp_path, downloader=offline, sleep=waited.append)
    assert "md_v5a.0.1.pt" in str(info.value) and "blob://" in info.value.hint and "md_v5a.0.1.pt" in info.value.hint
    assert len(tried) == loader.DOWNLOAD_ATTEMPTS and waited == [5.0, 10.0]  # tried again before giving up
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def _http_error(code: int) -> urllib.error.HTTPError:
    return urllib.error.HTTPError("https://github.com/x", code, "status", {}, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("exc", "passes"), [
    (_http_error(500), True),  # the whole 5xx range, its first code included
    (_http_error(503), True),
    (_http_error(408), True),  # "request timeout": the host asks for the request again
    (_http_error(429), True),
    (_http_error(499), False),
    (_http_error(404), False),
    (urllib.error.URLError(socket.gaierror(socket.EAI_AGAIN, "Temporary failure")), True),
    (urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name or service not known")), False),
    (urllib.error.URLError(socket.gaierror(socket.EAI_NODATA, "No address associated with hostname")), False),
    (urllib.error.URLError(ConnectionResetError(104, "reset")), True),
    (urllib.error.URLError(ConnectionRefusedError(111, "refused")), False),
    (urllib.error.URLError(TimeoutError("timed out")), False),
    (urllib.error.URLError("no route to host"), False),
    (TimeoutError("The read operation timed out"), True),
    (ConnectionResetError(104, "reset"), True),
    (OSError(errno.ENOSPC, "No space left on device"), False),  # the node's cache disk: no outage of the host
    (PermissionError(errno.EACCES, "Permission denied"), False),
], ids=["500", "503", "408", "429", "499", "404", "eai-again", "eai-noname", "eai-nodata", "url-reset", "refused",
        "connect-timeout", "url-text", "read-timeout", "reset", "disk-full", "permission"])
def test_which_download_failures_pass(exc: BaseException, passes: bool) -> None:
    """``download_did_not_answer`` decides exit 69 (another attempt, each shard up to max_attempts times) against
    exit 3 (the loader's advice, the task fails at a shard's second attempt): a 500 or 408 counted as a lasting
    failure would fail a task over a moment's outage of the publisher; EAI_NODATA (a node without internet) or a
    full/read-only cache disk counted as passing would spend hours of node time trying every shard again."""
    assert loader.download_did_not_answer(exc) is passes


def test_a_download_cut_short_once_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each new node downloads the model on its first shard: one cut connection, or a file cut short without an
    error, cost the shard an attempt (exit 3)."""
    payload = b"pretend weights"
    fake = KnownModel("v5a.0.1", "https://example.invalid/md_v5a.0.1.pt", "md5", hashlib.md5(payload).hexdigest())
    monkeypatch.setitem(loader.KNOWN_MODELS, "v5a.0.1", fake)  # type: ignore[arg-type]
    answers = iter([OSError("connection reset by peer"), payload[:5], payload])

    def flaky(url: str, dest: Path) -> None:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        dest.write_bytes(answer)

    path = resolve_model_file("MDV5A", cache_dir=tmp_path, downloader=flaky, sleep=lambda s: None)
    assert path.read_bytes() == payload and sorted(p.name for p in tmp_path.iterdir()) == ["md_v5a.0.1.pt"]


def test_known_model_download_is_hash_checked_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = b"pretend weights"
    fake = KnownModel("v5a.0.1", "https://example.invalid/md_v5a.0.1.pt", "md5", hashlib.md5(payload).hexdigest())
    monkeypatch.setitem(loader.KNOWN_MODELS, "v5a.0.1", fake)  # type: ignore[arg-type]
    calls = []

    def download(url: str, dest: Path) -> None:
        calls.append(url)
        dest.write_bytes(payload)

    first = resolve_model_file("mdv5a", cache_dir=tmp_path, downloader=download)
    again = resolve_model_file("MDV5A", cache_dir=tmp_path, downloader=download)
    assert first == again == tmp_path / "md_v5a.0.1.pt" and calls == [fake.url]

    def tampered(url: str, dest: Path) -> None:
        dest.write_bytes(b"something else")

    first.write_bytes(b"corrupted in cache")
    with pytest.raises(ModelLoadError, match="expected"):
        resolve_model_file("MDV5A", cache_dir=tmp_path, downloader=tampered, sleep=lambda s: None)


def test_local_path_and_bad_refs(tmp_path: Path, checkpoint: Path) -> None:
    assert resolve_model_file(str(checkpoint), cache_dir=tmp_path) == checkpoint
    with pytest.raises(ModelLoadError, match="neither a known MegaDetector version"):
        resolve_model_file(str(tmp_path / "missing.pt"), cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="no storage is configured"):
        resolve_model_file("blob://models/x.pt", cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="not blob://"):
        resolve_model_file("blob://justcontainer", cache_dir=tmp_path, blob_fetcher=lambda c, n, d: None)


@pytest.mark.parametrize("ref", ["blob://models/../trapbatch/tasks/x.pt", "blob://models/../../../inductor-cache/x",
                                 "blob://models/./x.pt", "blob://models//x.pt", "blob://models/a\\..\\x.pt",
                                 "blob://../x.pt"])
def test_a_blob_model_name_that_leaves_its_container_or_the_cache_is_refused_before_any_download(
        tmp_path: Path, ref: str) -> None:
    """The HTTP layer resolves '..' before sending (with the nodes' bearer token nothing signs the path, so another
    container is read) and the cache joins the name to its folder: such names are refused, nothing is fetched."""
    fetched: list[tuple[str, str]] = []
    with pytest.raises(ModelLoadError, match="plain blob name"):
        resolve_model_file(ref, cache_dir=tmp_path / "cache",
                           blob_fetcher=lambda c, n, d: fetched.append((c, n)))
    assert fetched == [] and not (tmp_path / "inductor-cache").exists()


def test_a_blob_model_is_not_cached_through_a_symlinked_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "cache" / "blob").mkdir(parents=True)
    (tmp_path / "cache" / "blob" / "models").symlink_to(outside)
    with pytest.raises(ModelLoadError, match="outside"):
        resolve_model_file("blob://models/x.pt", cache_dir=tmp_path / "cache",
                           blob_fetcher=lambda c, n, d: d.write_bytes(b"x"))
    assert list(outside.iterdir()) == []


def test_model_cache_dir_from_env(tmp_path: Path) -> None:
    from gpu_batch.worker.caches import model_cache_dir

    assert model_cache_dir({"TRAPBATCH_MODEL_CACHE": str(tmp_path)}) == tmp_path
    assert model_cache_dir({}).parts[-3:] == (".cache", "trapbatch", "models")


def test_batch_nodes_keep_model_and_compile_caches_in_the_node_shared_folder(tmp_path: Path) -> None:
    """Each shard's container is removed after it; the node's shared folder outlives it (no re-download per shard)."""
    from gpu_batch.worker import caches

    node = {"AZ_BATCH_NODE_SHARED_DIR": str(tmp_path / "shared")}
    assert caches.model_cache_dir(node) == tmp_path / "shared" / "trapbatch" / "models"
    assert caches.model_cache_dir({**node, "TRAPBATCH_MODEL_CACHE": str(tmp_path / "m")}) == tmp_path / "m"
    assert caches.compile_cache_dir(node) == tmp_path / "shared" / "trapbatch" / "inductor-cache"
    assert caches.compile_cache_dir({**node, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "i")}) == tmp_path / "i"
    assert caches.compile_cache_dir({}) is None  # torch's own default off Batch


def test_triton_builds_into_the_compile_cache_not_into_a_home_the_batch_user_cannot_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a Batch node the task's user has no home in the worker image (HOME is ``/``: runc ``setupUser``), and
    Triton's default cache is ``~/.triton/cache``, which it builds its CUDA driver module into before TorchInductor
    points it anywhere else (``caches.triton_cache_dir``): the worker names Triton's cache itself, beside the
    compile cache on the node's shared folder, through the variable Triton reads (``triton.knobs``)."""
    import os

    import triton.knobs

    from gpu_batch.worker import __main__ as cli
    from gpu_batch.worker import caches

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", "/")
    assert triton.knobs.cache.dir.startswith(triton.knobs.cache.home_dir)  # Triton's own default: the home's
    node = {"AZ_BATCH_NODE_SHARED_DIR": str(tmp_path / "shared")}
    cli.choose_compile_cache(node)
    inductor = tmp_path / "shared" / "trapbatch" / "inductor-cache"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(inductor)
    assert os.environ["TRITON_CACHE_DIR"] == str(inductor / "triton")
    assert triton.knobs.cache.dir == str(inductor / "triton")
    # an operator's own choice wins, as TORCHINDUCTOR_CACHE_DIR's does
    assert caches.triton_cache_dir(inductor, {"TRITON_CACHE_DIR": str(tmp_path / "t")}) == tmp_path / "t"
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.delenv("TRITON_CACHE_DIR")
    cli.choose_compile_cache({})  # off Batch: torch's and Triton's own defaults, as before
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ and "TRITON_CACHE_DIR" not in os.environ


def test_a_batch_task_without_the_node_shared_folder_is_said_not_silently_slow() -> None:
    """batch-container-isolation-task.md: a container task whose containerHostBatchBindMounts leaves out Shared loses
    AZ_BATCH_NODE_SHARED_DIR; the caches then die with each --rm container (a model download per shard)."""
    from gpu_batch.worker import caches

    problem = caches.node_cache_problem({"AZ_BATCH_NODE_ID": "tvm-1"})
    assert problem is not None and "containerHostBatchBindMounts" in problem and "Shared" in problem
    assert caches.node_cache_problem({"AZ_BATCH_NODE_ID": "tvm-1", "AZ_BATCH_NODE_SHARED_DIR": "/mnt/shared"}) is None
    assert caches.node_cache_problem({"AZ_BATCH_NODE_ID": "tvm-1", "TRAPBATCH_MODEL_CACHE": "/models"}) is None
    assert caches.node_cache_problem({}) is None  # off Batch: the home cache is the cache


@pytest.mark.parametrize("ref,url_tail", [("MDV1000-REDWOOD", "md_v1000.0.0-redwood.pt"),
                                          ("spruce", "md_v1000.0.0-spruce.pt"), ("MDV5B", "md_v5b.0.1.pt")])
def test_v1000_yolov5_family_names_resolve_to_megadetectors_release_files(tmp_path: Path, ref: str,
                                                                          url_tail: str) -> None:
    urls = []

    def download(url: str, dest: Path) -> None:
        urls.append(url)
        dest.write_bytes(b"not the real file")

    with pytest.raises(ModelLoadError, match="expected"):  # the published md5 is checked (on each try)
        resolve_model_file(ref, cache_dir=tmp_path, downloader=download, sleep=lambda s: None)
    assert len(set(urls)) == 1 and urls[0].endswith("/" + url_tail)


@pytest.mark.parametrize("ref,family", [("MDV1000-CEDAR", "YOLOv9"), ("larch", "YOLO11"),
                                        ("v1000.0.0-sorrel", "YOLO11")])
def test_unsupported_v1000_families_are_refused_before_any_download(tmp_path: Path, ref: str, family: str) -> None:
    def download(url: str, dest: Path) -> None:
        raise AssertionError("must not download a model it cannot run")

    with pytest.raises(ModelLoadError, match=family) as info:
        resolve_model_file(ref, cache_dir=tmp_path, downloader=download)
    assert "MDV5A" in info.value.hint


def test_metadata_image_size_sets_input_size_and_stride(tmp_path: Path) -> None:
    from gpu_batch.worker.make_test_checkpoint import write_test_checkpoint

    plain = write_test_checkpoint(tmp_path / "plain.pt", arch="yolov5n", seed=1)
    assert loader.read_model_metadata(plain) is None
    assert (load_model(plain).image_size, load_model(plain).stride) == (1280, 64)  # MDv5: no metadata
    bad = write_test_checkpoint(tmp_path / "bad.pt", arch="yolov5n", seed=1, metadata={"image_size": "big"})
    with pytest.raises(ModelLoadError, match="image_size"):
        load_model(bad)
    assert load_model(bad, image_size=960).image_size == 960  # an explicit size wins


def _yolov5_fuse(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """YOLOv5's own ``fuse_conv_and_bn`` (the matrix form MegaDetector runs), from the oracle's yolov5 package."""
    monkeypatch.setenv("YOLO_CONFIG_DIR", "/tmp/trapbatch-yolo-config")
    from yolov5.utils.torch_utils import fuse_conv_and_bn

    return fuse_conv_and_bn


@pytest.mark.parametrize("groups,bias", [(1, False), (1, True), (4, False)])
def test_fast_conv_bn_fusion_is_bit_identical_to_yolov5s_matrix_form(monkeypatch: pytest.MonkeyPatch, groups: int,
                                                                     bias: bool) -> None:
    from gpu_batch.worker.yolov5_modules import fuse_conv_and_bn

    reference = _yolov5_fuse(monkeypatch)
    gen = torch.Generator().manual_seed(groups * 10 + bias)
    for c_in, c_out, k in ((8, 16, 3), (64, 128, 1), (256, 96, 3)):
        conv = torch.nn.Conv2d(c_in, c_out, k, groups=groups, bias=bias).requires_grad_(False)
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        bn = torch.nn.BatchNorm2d(c_out).eval().requires_grad_(False)
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.copy_(torch.randn(c_out, generator=gen) * 3)
        bn.running_var.copy_(torch.rand(c_out, generator=gen) * 5 + 1e-4)
        ours, theirs = fuse_conv_and_bn(conv, bn), reference(conv, bn)
        assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias), (c_in, c_out, k)


def test_loaded_model_equals_yolov5_fusion_of_the_same_checkpoint(checkpoint: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _yolov5_fuse(monkeypatch)
    ours = load_model(checkpoint, device="cpu").network
    raw = loader.read_checkpoint(checkpoint)
    theirs = raw["model"].float().eval()
    for m in theirs.modules():
        if hasattr(m, "bn") and hasattr(m, "conv"):
            m.conv = reference(m.conv, m.bn)
            delattr(m, "bn")
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and len(a) > 100
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_network_traces_as_one_graph_for_torch_compile(checkpoint: Path) -> None:
    """A graph break (YOLOv5's warnings.catch_warnings in SPPF was one) splits ``--compile`` into per-layer graphs
    that recompile per shape until torch gives up and runs most layers eagerly."""
    import torch._dynamo

    network = load_model(checkpoint, device="cpu").network
    explained = torch._dynamo.explain(network)(torch.rand(1, 3, 256, 320))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


# --- crafted checkpoints: refused before anything in them runs ------------------------------------------------------

def _reduce_to(func: Any, *args: Any) -> Any:
    class Payload:
        def __reduce__(self) -> Any:
            return func, args
    return Payload()


def _malicious_pickles(marker: Path) -> dict[str, bytes]:
    """Pickle programs that would create ``marker`` if anything in them ran, in the ways such files are built."""
    import builtins
    import os

    touch = f"touch {marker}"
    write = f"open({str(marker)!r}, 'w').write('pwned')"
    def short(text: str) -> bytes:  # SHORT_BINUNICODE
        return b"\x8c" + bytes([len(text)]) + text.encode()

    raw = {
        # hand-written protocol-2 program: getattr(__import__('os'), 'system')('touch ...')
        "getattr_import": (b"\x80\x02cbuiltins\ngetattr\ncbuiltins\n__import__\nX\x02\x00\x00\x00os\x85RX\x06\x00\x00"
                           b"\x00system\x86R(X" + len(touch).to_bytes(4, "little") + touch.encode() + b"tR."),
        # os.system reached as an attribute of a torch module (pickle's protocol-4 dotted names): torch.serialization
        # imports os, and "torch..." looks harmless to a module-prefix allow-list
        "dotted_name": b"\x80\x04" + short("torch.serialization") + short("os.system") + b"\x93" + short(touch)
                       + b"\x85R.",
    }
    for name, obj in {"os_system": _reduce_to(os.system, touch), "exec": _reduce_to(builtins.exec, write),
                      "eval": _reduce_to(builtins.eval, write)}.items():
        raw[name] = pickle.dumps({"model": obj}, protocol=2)
    return raw


def test_the_crafted_payloads_are_live(tmp_path: Path) -> None:
    """Control: under plain pickle each program does create its file (so the tests below prove something)."""
    for name, program in _malicious_pickles(tmp_path / "control").items():
        try:
            pickle.loads(program)
        except Exception:  # noqa: BLE001 - what the payload's return value does next does not matter
            pass
        assert (tmp_path / "control").exists(), name
        (tmp_path / "control").unlink()


@pytest.mark.parametrize("container", ["torch_zip", "legacy_pickle"])
def test_a_crafted_checkpoint_runs_nothing_and_is_a_model_load_error(tmp_path: Path, container: str) -> None:
    import io

    marker = tmp_path / "side-effect"
    for name, program in _malicious_pickles(marker).items():
        path = tmp_path / f"{name}.pt"
        if container == "torch_zip":  # the program as data.pkl of a real torch.save archive
            buf = io.BytesIO()
            torch.save({"x": 1}, buf)
            with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(path, "w") as dst:
                for item in src.infolist():
                    dst.writestr(item, program if item.filename.endswith("data.pkl") else src.read(item))
        else:  # a bare pickle, which torch.load reads with its legacy loader
            path.write_bytes(program)
        with pytest.raises(ModelLoadError) as info:
            load_model(path)
        assert "was not loaded" in str(info.value), (name, str(info.value))
        assert "weights_only=False" not in str(info.value)  # never advise turning the protection off
        assert not marker.exists(), f"{name} ({container}) ran code"


def test_a_refused_global_is_named(tmp_path: Path) -> None:
    import os

    marker = tmp_path / "side-effect"
    path = tmp_path / "evil.pt"
    torch.save({"model": _reduce_to(os.system, f"touch {marker}")}, path)
    with pytest.raises(ModelLoadError, match=r"references posix\.system, which the trapbatch worker does not provide"):
        load_model(path)
    assert not marker.exists()


def test_the_allow_list_is_exactly_yolov5_torch_layers_and_numpy_values() -> None:
    names = {name for _, name in loader.checkpoint_globals()}  # type: ignore[misc]
    assert {"models.yolo.Model", "models.yolo.Detect", "models.common.C3", "yolov5.models.common.SPPF",
            "torch.nn.modules.conv.Conv2d", "numpy.core.multiarray._reconstruct"} <= names
    assert not any(n.startswith(("builtins", "os.", "posix", "subprocess", "torch.load", "torch.jit", "importlib",
                                 "pickle", "pathlib", "argparse")) for n in names)
    assert all(n.startswith(("models.", "yolov5.models.", "torch.nn.modules.", "numpy.")) for n in names)


def test_numpy_values_in_a_checkpoint_load(tmp_path: Path, checkpoint: Path) -> None:
    """YOLOv5 training checkpoints keep best_fitness as a numpy array; that must not stop a real file loading."""
    import numpy as np

    raw = loader.read_checkpoint(checkpoint)
    raw["best_fitness"] = np.array([0.71])
    raw["epoch_fitness"] = np.float64(0.5)
    path = tmp_path / "with_numpy.pt"
    from gpu_batch.worker.make_test_checkpoint import pickled_as_yolov5

    with pickled_as_yolov5():
        torch.save(raw, path)
    assert isinstance(load_model(path).network, Model)
    assert loader.read_checkpoint(path)["best_fitness"][0] == 0.71


def test_two_workers_fetching_a_blob_model_at_once_each_write_a_file_of_their_own(tmp_path: Path) -> None:
    """Both wrote one "<name>.part": the file renamed into place could hold both downloads' bytes interleaved."""
    import threading

    barrier = threading.Barrier(2)
    parts: list[Path] = []

    def fetch(container: str, name: str, dest: Path) -> None:
        parts.append(dest)
        barrier.wait(timeout=30)  # both are downloading now
        dest.write_bytes(b"weights")

    found: list[Path] = []
    threads = [threading.Thread(target=lambda: found.append(
        resolve_model_file("blob://models/md.pt", cache_dir=tmp_path, blob_fetcher=fetch))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(set(parts)) == 2 and found == [tmp_path / "blob" / "models" / "md.pt"] * 2
    assert found[0].read_bytes() == b"weights" and not list((tmp_path / "blob" / "models").glob("*.part"))


def test_a_blob_model_overwritten_with_new_weights_is_downloaded_again(tmp_path: Path) -> None:
    """The node's cache kept a ``blob://`` model for ever: overwritten under the same name, nodes that had it ran the
    old weights (a resident server kept them loaded) beside new nodes running the new ones. Each resolve now asks
    the blob's ETag: the same version is used from the cache, another is downloaded; unreadable, the cache serves."""
    blob = {"etag": '"0x1"', "data": b"weights 1"}
    fetched: list[str] = []

    def fetch(container: str, name: str, dest: Path) -> None:
        fetched.append(str(blob["etag"]))
        dest.write_bytes(blob["data"])  # type: ignore[arg-type]

    def version(container: str, name: str) -> str:
        if blob["etag"] is None:
            raise ConnectionError("storage unreachable")
        return str(blob["etag"])

    def resolve() -> bytes:
        return resolve_model_file("blob://models/md.pt", cache_dir=tmp_path, blob_fetcher=fetch,
                                  blob_version=version).read_bytes()

    assert resolve() == b"weights 1" and resolve() == b"weights 1" and fetched == ['"0x1"']
    blob.update(etag='"0x2"', data=b"weights 2")
    assert resolve() == b"weights 2" and fetched == ['"0x1"', '"0x2"']
    blob["etag"] = None
    assert resolve() == b"weights 2" and len(fetched) == 2  # the newest copy
    # overwritten while it downloaded: the bytes could be either version's, so that download does not count
    blob.update(etag='"0x3"', data=b"weights 3")
    calls = iter(['"0x3"', '"0x4"', '"0x4"', '"0x4"'])
    seen = lambda c, n: next(calls)  # noqa: E731
    path = resolve_model_file("blob://models/md.pt", cache_dir=tmp_path, blob_fetcher=fetch, blob_version=seen)
    assert path.name == "md.pt@0x4" and len(fetched) == 4
    # only the newest versions stay on the node
    blob.update(etag='"0x5"', data=b"weights 5")
    assert resolve() == b"weights 5"
    kept = sorted(p.name for p in (tmp_path / "blob" / "models").iterdir())
    assert len(kept) == KEPT_BLOB_VERSIONS and "md.pt@0x5" in kept and "md.pt@0x1" not in kept


def test_a_resident_workers_model_key_follows_the_weights_not_the_name(tmp_path: Path) -> None:
    """A resident server keeps loaded models under ``_model_key``: a ``blob://`` model carried its reference only, so
    once the blob was overwritten (and downloaded again) the old weights stayed loaded; a local checkpoint rewritten
    with its size and modification time kept (same architecture, ``touch -r``) did too."""
    import argparse
    import os

    from gpu_batch.worker.__main__ import _model_key

    versions = {"blob://models/md.pt": '"0x1"'}
    def key(model: str) -> object:
        args = argparse.Namespace(model=model, compile=False)
        return _model_key(args, None, "cpu", versions.get)  # type: ignore[arg-type]
    first = key("blob://models/md.pt")
    assert key("blob://models/md.pt") == first
    versions["blob://models/md.pt"] = '"0x2"'
    assert key("blob://models/md.pt") != first

    checkpoint = tmp_path / "md.pt"
    checkpoint.write_bytes(b"weights 1")
    before = checkpoint.stat()
    local = key(str(checkpoint))
    replacement = tmp_path / "new.pt"
    replacement.write_bytes(b"weights 2")  # same size
    os.replace(replacement, checkpoint)
    os.utime(checkpoint, ns=(before.st_atime_ns, before.st_mtime_ns))  # same modification time
    assert checkpoint.stat().st_size == before.st_size and key(str(checkpoint)) != local
