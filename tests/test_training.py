"""yolo3.training: freezing by meaning for each model kind, create_training_model
(inputs, outputs, names, the kind's defaults), create_model / create_tiny_model, and
detection_body."""
import pytest

from tests.fixtures import TINY_ANCHORS, YOLO_ANCHORS
from yolo3.errors import UserError
from yolo3.kinds import KINDS, kind_of_body
from yolo3.training import (create_tiny_model, create_training_model, detection_body,
                            freeze_body_layers)

OUTPUTS = {"yolov3": ["conv_081", "conv_093", "conv_105"],
           "yolov3-spp": ["conv_088", "conv_100", "conv_112"],
           "yolov3-tiny": ["conv_015", "conv_022"]}


@pytest.fixture(scope="module", params=["yolov3", "yolov3-spp", "yolov3-tiny"])
def body(request):
    return KINDS[request.param].build(80)


def test_freezing_by_meaning(body):
    name = next(n for n, outs in OUTPUTS.items()
                if [o._keras_history[0].name for o in body.outputs] == outs)
    frozen = freeze_body_layers(body, 1)
    convs = [n for n in frozen if n.startswith("conv")]
    # tiny: the original's first 20 layers, 5 x (conv, bn, leaky, maxpool) up to
    # darknet layer 8; YOLOv3 and SPP: Darknet53, 52 convolutions in layers 0..74.
    if name == "yolov3-tiny":
        assert convs == ["conv_000", "conv_002", "conv_004", "conv_006", "conv_008"]
    else:
        assert len(convs) == 52 and max(int(n[-3:]) for n in frozen) == 74
        assert all(n[:4] in ("conv", "bn_0", "leak", "pad_", "add_") for n in frozen)
    assert all(not body.get_layer(n).trainable for n in frozen)
    freeze_body_layers(body, 2)
    assert [l.name for l in body.layers if l.weights and l.trainable] == OUTPUTS[name]
    assert list(kind_of_body(body).output_convs) == OUTPUTS[name]
    assert kind_of_body(body).name == name
    freeze_body_layers(body, 0)
    assert all(l.trainable for l in body.layers)
    with pytest.raises(ValueError, match="0, 1 or 2"):
        freeze_body_layers(body, 3)


def test_create_training_model_for_a_kind(capsys):
    model = create_training_model("yolov3-spp", (64, 96), YOLO_ANCHORS, 2,
                                  load_pretrained=False, freeze_body=0)
    assert "Create YOLOv3-SPP model with 9 anchors and 2 classes." in capsys.readouterr().out
    assert [i.name for i in model.inputs] == ["image", "y_true_0", "y_true_1", "y_true_2"]
    assert [tuple(i.shape) for i in model.inputs[1:]] == [
        (None, 2, 3, 3, 7), (None, 4, 6, 3, 7), (None, 8, 12, 3, 7)]   # strides 32, 16, 8
    loss = model.get_layer("yolo_loss")
    assert model.outputs[0].shape == (None,) and loss.ignore_thresh == 0.5
    assert loss.mask == [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
    body = detection_body(model)
    assert body.name == "yolo_spp_body"
    assert [o._keras_history[0].name for o in body.outputs] == OUTPUTS["yolov3-spp"]
    # the same layer objects: training the model trains the body
    assert body.get_layer("conv_088") is model.get_layer("conv_088")


def test_create_tiny_model_is_the_tiny_kind(tmp_path, capsys, monkeypatch):
    model = create_tiny_model((64, 64), TINY_ANCHORS, 3, load_pretrained=False,
                              freeze_body=2, mask=[[3, 4, 5], [0, 1, 2]])
    out = capsys.readouterr().out
    assert "Create tiny-YOLOv3 model with 6 anchors and 3 classes." in out
    assert "Freeze 22 of 24 layers with weights (freeze_body=2)." in out
    loss = model.get_layer("yolo_loss")
    assert loss.ignore_thresh == 0.7 and loss.mask == [[3, 4, 5], [0, 1, 2]]
    assert detection_body(model).name == "tiny_yolo_body"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="model_data/tiny_yolo_weights.h5"):
        create_training_model(KINDS["yolov3-tiny"], (64, 64), TINY_ANCHORS, 3)


def test_anchors_that_do_not_fit_the_kind():
    with pytest.raises(UserError, match="^6 anchors; YOLOv3-SPP takes 9$"):
        create_training_model("yolov3-spp", (64, 64), TINY_ANCHORS, 2, load_pretrained=False)
    with pytest.raises(UserError, match="^unknown model 'yolov4'"):
        create_training_model("yolov4", (64, 64), YOLO_ANCHORS, 2, load_pretrained=False)
    with pytest.raises(UserError, match="has 2 heads; 9 anchors need 3"):
        create_training_model("yolov3", (64, 64), YOLO_ANCHORS, 2, load_pretrained=False,
                              mask=[[0, 1, 2], [3, 4, 5]])
