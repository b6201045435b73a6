"""Security: nothing from a user's file is unpickled, evaluated or written to.

The source checks walk the syntax tree of every Python file in the project
(library, scripts, benchmarks, tests), so comments and strings never trigger them.
"""
import ast
from pathlib import Path

import pytest
from tests.fixtures import ROOT

THIS = Path(__file__).name
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib",
                  "marshal", "shelve"}


def project_sources():
    skip = {".git", ".ci-venv", "venv", ".venv", "logs", "node_modules"}
    files = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = set(path.relative_to(ROOT).parts)
        if parts & skip or any(p.startswith(".") for p in path.relative_to(ROOT).parts):
            continue
        files.append(path)
    return files


def parsed_sources():
    for path in project_sources():
        yield path.relative_to(ROOT), ast.parse(path.read_text(encoding="utf-8"))


def call_name(node):
    """'np.load' for np.load(...), 'eval' for eval(...), else the last name."""
    func = node.func
    names = []
    while isinstance(func, ast.Attribute):
        names.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        names.append(func.id)
    return ".".join(reversed(names))


def keyword(node, name):
    for kw in node.keywords:
        if kw.arg == name:
            return kw.value
    return None


def is_false(value):
    return isinstance(value, ast.Constant) and value.value is False


def test_sources_are_found():
    names = {p.name for p in project_sources()}
    assert "test_security.py" in names
    assert "atomic.py" in names


def test_no_pickle_modules_imported():
    """The library and scripts never import a pickle-like module; tests may
    round-trip their own objects (a worker's copy) but never load a file."""
    offenders = []
    for rel, tree in parsed_sources():
        if rel.parts[0] == "tests":
            offenders += [f"{rel}:{node.lineno}" for node in ast.walk(tree)
                          if isinstance(node, ast.Call) and call_name(node) in (
                              "pickle.load", "pickle.Unpickler", "dill.load",
                              "joblib.load", "marshal.load")]
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [(node.module or "").split(".")[0]]
            else:
                continue
            offenders += [f"{rel}:{node.lineno}: {m}" for m in mods
                          if m in UNSAFE_MODULES]
    assert offenders == []


def test_numpy_load_never_allows_pickle():
    """Every np.load states allow_pickle=False (a .npy/.npz can carry a pickle)."""
    offenders = []
    for rel, tree in parsed_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and call_name(node) in (
                    "np.load", "numpy.load"):
                if not is_false(keyword(node, "allow_pickle")):
                    offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []


def test_no_eval_exec_or_unsafe_loaders():
    """No eval/exec/compile of text; no yaml.load; Keras unsafe mode never enabled."""
    offenders = []
    for rel, tree in parsed_sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = call_name(node)
            where = f"{rel}:{node.lineno}: {name}"
            if name in ("eval", "exec", "compile", "__import__", "builtins.eval",
                        "builtins.exec", "os.system"):
                offenders.append(where)
            if name.endswith("enable_unsafe_deserialization"):
                offenders.append(where)
            # This file turns safe mode off once, on purpose, to prove its payload.
            if is_false(keyword(node, "safe_mode")) and rel.name != THIS:
                offenders.append(where + " safe_mode=False")
            if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
                offenders.append(where)
            shell = keyword(node, "shell")
            if isinstance(shell, ast.Constant) and shell.value is True:
                offenders.append(where + " shell=True")
    assert offenders == []


def test_keras_files_are_loaded_in_safe_mode():
    """Every keras load_model / Lambda deserialisation keeps safe mode (the default)."""
    offenders = []
    for rel, tree in parsed_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and call_name(node).endswith("load_model"):
                mode = keyword(node, "safe_mode")
                if rel.name != THIS and mode is not None and not (isinstance(mode, ast.Constant)
                                             and mode.value is True):
                    offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []


def _evil_keras_file(tmp_path):
    """A .keras file whose Lambda layer would create `marker` when deserialised."""
    import keras
    marker = tmp_path / "pwned"

    def make_payload(target):
        return lambda x: (open(target, "w").close(), x)[1]

    payload = make_payload(str(marker))
    inputs = keras.Input((8, 8, 3), name="image")
    model = keras.Model(inputs, keras.layers.Lambda(payload)(inputs))
    path = tmp_path / "evil.keras"
    model.save(path)
    marker.unlink(missing_ok=True)
    return path, marker


def test_evil_keras_file_is_refused_by_keras_safe_mode(tmp_path):
    """The attack works only with safe mode off: the test's payload is real."""
    import keras
    path, marker = _evil_keras_file(tmp_path)
    with pytest.raises(ValueError, match="safe_mode=False"):
        keras.saving.load_model(path)
    assert not marker.exists()
    keras.saving.load_model(path, safe_mode=False)
    assert marker.exists()


def test_weights_reader_never_runs_code_from_a_keras_file(tmp_path):
    """load_weights reads only the arrays inside a .keras archive."""
    import keras
    from yolo3.errors import UserError
    from yolo3.weights import load_weights
    path, marker = _evil_keras_file(tmp_path)
    inputs = keras.Input((8, 8, 3), name="image")
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="conv_000")(inputs))
    with pytest.raises(UserError):
        load_weights(model, path)
    assert not marker.exists()


def test_detector_refuses_an_unsafe_keras_file(tmp_path, capsys):
    """yolo.py --model evil.keras: exit status 2, the payload never runs."""
    import yolo
    from yolo3.errors import run_cli
    path, marker = _evil_keras_file(tmp_path)
    image = tmp_path / "a.png"
    from PIL import Image
    Image.new("RGB", (32, 32)).save(image)
    status = run_cli(yolo.main, ["--model", str(path), "--anchors",
                                 str(ROOT / "model_data" / "tiny_yolo_anchors.txt"),
                                 "--classes", str(ROOT / "model_data" / "voc_classes.txt"),
                                 "--image", str(image), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and str(path) in err
    assert not marker.exists()


def test_annotation_paths_are_never_written(tmp_path):
    """Reading, validating and augmenting a data set leaves every file as it was
    (the kill/resume test checks the same over whole training runs)."""
    from PIL import Image
    from yolo3.annotation_file import read_annotations
    from yolo3.batches import YoloDataset
    from yolo3.anchors import get_anchors
    folder = tmp_path / "data"
    folder.mkdir()
    lines = []
    for i, mode in enumerate(["RGB", "L", "P", "RGBA"]):
        Image.new(mode, (40 + i, 30)).save(folder / f"{i}.png")
        lines.append(f"{folder / f'{i}.png'} 2,2,20,20,0")
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    parsed = read_annotations(folder / "train.txt", 1, full_check=True)
    anchors = get_anchors(ROOT / "model_data" / "tiny_yolo_anchors.txt")
    for augment in (True, False):
        dataset = YoloDataset(parsed, 2, (64, 64), anchors, 1, augment=augment, seed=0)
        for index in range(len(dataset)):
            dataset[index]
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()} == before


WRITERS = ("savefig", "save", "savez", "savez_compressed", "imwrite", "VideoWriter",
           "to_csv", "write_text", "write_bytes")


def _is_write(node):
    """A call that creates or overwrites a file: open(.., 'w'/'a'/'x'), h5py.File
    in a write mode, or a save-like method (not self.save, a wrapper)."""
    name = call_name(node)
    last = name.rsplit(".", 1)[-1]
    if name in ("open", "io.open", "h5py.File"):
        mode = node.args[1] if len(node.args) > 1 else keyword(node, "mode")
        return isinstance(mode, ast.Constant) and isinstance(mode.value, str) and any(
            c in mode.value for c in "wax")
    return last in WRITERS and not name.startswith("self.") and name != "save"


def unguarded_writes(tree):
    """Lines of file writes outside `with atomic_path/atomic_open` that do not go
    to a temporary name or an in-memory buffer."""
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and any(
                isinstance(n, ast.Call) and call_name(n).split(".")[-1] in (
                    "atomic_path", "atomic_open")
                for item in node.items for n in ast.walk(item.context_expr)):
            guarded.update(id(n) for n in ast.walk(node))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_write(node) and id(node) not in guarded:
            target = ast.unparse(node.args[0]) if node.args else ""
            if not any(word in target for word in ("temp", "buffer", "handle")):
                lines.append(node.lineno)
    return lines


def test_unguarded_write_detector():
    tree = ast.parse(
        "with atomic_path(p) as temp:\n    img.save(temp)\n"    # 1-2 fine
        "with atomic_open(p, 'w') as f:\n    open(p, 'w')\n"    # 3-4 fine
        "open(p, 'w')\n"                                          # 5 bad
        "fig.savefig(out)\n"                                      # 6 bad
        "h5py.File(path, 'w')\n"                                  # 7 bad
        "open(p)\nh5py.File(path, 'r')\nself.save(name)\n")     # reads, wrapper
    assert unguarded_writes(tree) == [5, 6, 7]


def test_every_output_file_is_written_atomically():
    """In the library and the scripts, every file write happens inside
    `with atomic_path(...)` / `atomic_open(...)`, or goes to a temporary name or an
    in-memory buffer handed to one (so a kill never leaves a truncated output)."""
    offenders = []
    for rel, tree in parsed_sources():
        if rel.parts[0] in ("tests", "bench"):
            continue
        offenders += [f"{rel}:{line}" for line in unguarded_writes(tree)]
    assert offenders == []
