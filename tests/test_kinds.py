"""yolo3.kinds: the table against darknet's cfg files, the lookups, and YOLOv3-SPP
end to end (convert.py, the detector, a short training through the library)."""
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from PIL import Image

import convert
from tests.fixtures import YOLO_ANCHORS
from tests.fixtures.darknet import random_weights
from yolo3 import darknet
from yolo3.errors import UserError, run_cli
from yolo3.kinds import KINDS, NAMES, kind_for_anchors, kind_of_body, kind_of_names

CFG = Path(__file__).resolve().parent / "cfg"


@pytest.mark.parametrize("name", NAMES)
def test_each_row_matches_darknets_cfg(name):
    """Heads, output convolutions, strides and anchor count as the cfg states them
    ([yolo] sections and the shapes darknet infers at the cfg's input size)."""
    kind = KINDS[name]
    network = darknet.load_cfg(CFG / f"{name}.cfg")
    assert kind.output_convs == tuple(f"conv_{h['source']:03d}" for h in network.heads)
    assert kind.strides == tuple(network.width // network.layers[h["source"]].shape[1]
                                 for h in network.heads)
    assert kind.num_anchors == len(network.anchors())
    kinds_of = {layer.kind for layer in network.layers}
    if "shortcut" in kinds_of:   # Darknet53: freeze_body=1 ends at its last shortcut
        assert kind.last_backbone_layer == max(
            layer.index for layer in network.layers if layer.kind == "shortcut")
    else:                        # tiny: at the map the second head routes to
        assert network.layers[-4].kind == "route"
        assert kind.last_backbone_layer in network.layers[-4].inputs


def test_darknet_cfg_convolutions_tell_the_kind():
    for name in NAMES:
        network = darknet.load_cfg(CFG / f"{name}.cfg")
        assert kind_of_names(f"conv_{c.index:03d}" for c in network.convs) is KINDS[name]
    darknet53 = darknet.load_cfg(CFG / "darknet53.cfg")     # holds conv_015 and conv_022
    assert kind_of_names(f"conv_{c.index:03d}" for c in darknet53.convs) is None


def test_kind_for_anchors():
    assert kind_for_anchors(9) is KINDS["yolov3"]
    assert kind_for_anchors(6) is KINDS["yolov3-tiny"]
    assert kind_for_anchors(9, "yolov3-spp") is KINDS["yolov3-spp"]
    with pytest.raises(UserError) as info:
        kind_for_anchors(4)
    assert str(info.value) == "4 anchors; expected 9 (YOLOv3, YOLOv3-SPP) or 6 (tiny-YOLOv3)"
    with pytest.raises(UserError, match="^6 anchors; YOLOv3-SPP takes 9$"):
        kind_for_anchors(6, "yolov3-spp")
    with pytest.raises(UserError, match="^unknown model 'yolov5'; choose one of yolov3, "
                                        "yolov3-tiny, yolov3-spp$"):
        kind_for_anchors(9, "yolov5")


@pytest.mark.parametrize("name", NAMES)
def test_each_builder_gives_the_row(name):
    kind = KINDS[name]
    body = kind.build(2, (64, 64))
    assert kind_of_body(body) is kind
    assert [o._keras_history[0].name for o in body.outputs] == list(kind.output_convs)
    assert [64 // o.shape[1] for o in body.outputs] == list(kind.strides)
    assert {o.shape[-1] for o in body.outputs} == {3 * (2 + 5)}
    assert body.get_layer(f"conv_{kind.last_backbone_layer:03d}" if name == "yolov3-tiny"
                          else f"add_{kind.last_backbone_layer:03d}")


def test_another_network_is_no_kind():
    tiny_like = keras.Sequential([keras.Input((32, 32, 3)),
                                  keras.layers.Conv2D(4, 3, name="conv_015"),
                                  keras.layers.Conv2D(4, 3, name="conv_022"),
                                  keras.layers.Conv2D(4, 1, name="conv_023")], name="net")
    with pytest.raises(UserError, match="'net' is none of the model kinds"):
        kind_of_body(tiny_like)


# ------------------------------------------------------------ YOLOv3-SPP end to end
@pytest.fixture(scope="module")
def spp_files(tmp_path_factory):
    """darknet's yolov3-spp.cfg with random weights (63,052,381 floats), converted by
    convert.py to a weights file by layer name."""
    folder = tmp_path_factory.mktemp("spp")
    random_weights(folder / "spp.weights", CFG / "yolov3-spp.cfg", seed=21)
    assert (folder / "spp.weights").stat().st_size == 20 + 4 * 63_052_381
    assert run_cli(convert.main, [str(CFG / "yolov3-spp.cfg"), str(folder / "spp.weights"),
                                  str(folder / "spp.h5")]) == 0
    (folder / "classes.txt").write_text("".join(f"c{i}\n" for i in range(80)))
    (folder / "anchors.txt").write_text(", ".join(f"{w:g},{h:g}" for w, h in YOLO_ANCHORS))
    yield folder
    for name in ("spp.weights", "spp.h5"):     # 252 MB each
        (folder / name).unlink()


def test_converted_spp_weights_detect_as_spp_and_compute_darknets_numbers(spp_files):
    """The detector picks YOLOv3-SPP from the file's layer names (9 anchors alone
    would mean YOLOv3); its raw outputs are OpenCV's (darknet importer, same cfg
    and weights) within float32 rounding, and it detects."""
    from yolo3.detector import YOLO
    detector = YOLO(model_path=spp_files / "spp.h5", anchors_path=spp_files / "anchors.txt",
                    classes_path=spp_files / "classes.txt", model_image_size=64, score=0.0)
    assert kind_of_body(detector.body) is KINDS["yolov3-spp"]
    assert detector.body.name == "yolo_spp_body"
    image = Image.fromarray(np.random.default_rng(22).integers(0, 256, (64, 64, 3), np.uint8))
    x = detector.preprocess(image)[None]
    ours = [np.asarray(o) for o in detector.body(x)]
    assert [o.shape for o in ours] == [(1, 2, 2, 255), (1, 4, 4, 255), (1, 8, 8, 255)]
    net = cv2.dnn.readNetFromDarknet(str(CFG / "yolov3-spp.cfg"), str(spp_files / "spp.weights"))
    net.setInput(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    theirs = [o.transpose(0, 2, 3, 1) for o in net.forward(["conv_88", "conv_100", "conv_112"])]
    for a, b in zip(ours, theirs):
        assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(b).max())
    detections = detector.detect([image])[0]
    assert len(detections.scores) > 0 and np.isfinite(detections.boxes).all()


def test_spp_trains_through_the_library(spp_files, capsys):
    """create_training_model with the SPP kind from the converted (80-class) file
    for 2 classes: all but the 3 output convolutions load; a few steps on one
    fixed batch at 64 px lower the loss."""
    from yolo3.model import preprocess_true_boxes
    from yolo3.training import compile_model, create_training_model, detection_body
    model = create_training_model("yolov3-spp", (64, 64), YOLO_ANCHORS, 2,
                                  weights_path=spp_files / "spp.h5", freeze_body=2)
    out = capsys.readouterr().out
    assert "Create YOLOv3-SPP model with 9 anchors and 2 classes." in out
    assert "3 skipped (conv_088, conv_100, conv_112)" in out
    assert detection_body(model).name == "yolo_spp_body"
    compile_model(model, 1e-3, jit_compile=False)
    rng = np.random.default_rng(23)
    x = rng.random((2, 64, 64, 3)).astype(np.float32)
    boxes = np.array([[[8, 8, 40, 50, 0], [30, 20, 60, 40, 1]],
                      [[2, 30, 20, 62, 1], [0, 0, 0, 0, 0]]], np.float32)
    y_true = preprocess_true_boxes(boxes, (64, 64), YOLO_ANCHORS, 2)
    losses = model.fit([x, *y_true], np.zeros(2), batch_size=2, epochs=4,
                       verbose=0).history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
