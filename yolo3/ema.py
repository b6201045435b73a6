"""An exponential moving average of a model's weights (YOLOv5's ModelEMA), kept
as shadow variables beside the model and updated after every optimizer step.

The decay ramps up with the number of updates n: d = decay * (1 - exp(-n / ramp)),
so early on the average follows the weights closely and later it averages over
about 1 / (1 - decay) steps. With YOLOv5's ramp of 2000, d is only about 0.14
after 300 updates (a whole small data set's training may be that short), so the
average is then hardly more than the last two or three steps: use a smaller
ramp for short runs (d = 0.78 after 300 updates with ramp 200)."""
import contextlib
import math

import keras
import numpy as np
from keras import ops

from .atomic import atomic_path
from .callbacks import finite
from .errors import UserError


class WeightEMA(keras.callbacks.Callback):
    """Shadow copies of every float weight of `model` (trainable ones, BatchNorm's
    moving statistics, frozen ones), ema = d * ema + (1 - d) * w after every
    update of the optimizer (every N batches under gradient accumulation).
    `model` is the network whose weights are averaged (the detection body);
    the callback may serve any model that trains those weights.

    Within fit: the validation and everything that runs at the end of an epoch
    between this callback and `restorer()` see the averaged weights."""

    def __init__(self, model, decay=0.9999, ramp=2000):
        super().__init__()
        if not 0 < decay < 1:
            raise UserError(f"--ema-decay {decay}: must be in (0, 1)")
        if not ramp > 0:
            raise UserError(f"EMA ramp {ramp}: must be positive")
        self.decay, self.ramp = float(decay), float(ramp)
        self.variables = [v for v in model.weights if "float" in str(v.dtype)]
        self.shadow = [keras.Variable(ops.convert_to_tensor(v), trainable=False,
                                      name=f"ema_{i}")
                       for i, v in enumerate(self.variables)]
        self.updates = 0
        self._steps = 0       # the optimizer's update count after the last batch
        self._live = None     # the live weights while the averaged ones are in place

    def current_decay(self):
        """d of the next update."""
        return self.decay * (1 - math.exp(-(self.updates + 1) / self.ramp))

    def update(self):
        """One step of the average: ema -= (1 - d) * (ema - w), which leaves an
        unchanged weight's shadow exactly as it is."""
        rate = 1 - self.current_decay()
        for ema, variable in zip(self.shadow, self.variables):
            ema.assign_sub(rate * (ema - variable))
        self.updates += 1

    def reset(self):
        """Restart the average at the model's current weights."""
        for ema, variable in zip(self.shadow, self.variables):
            ema.assign(variable)
        self.updates = 0

    # -- the averaged weights in the model ----------------------------------------
    def put_in(self):
        """Put the averaged weights into the model, keeping the live ones aside;
        True when it did (False: they were in already)."""
        if self._live is not None:
            return False
        self._live = [ops.convert_to_numpy(v) for v in self.variables]
        for ema, variable in zip(self.shadow, self.variables):
            variable.assign(ema)
        return True

    def take_out(self):
        """Put the live weights back (no-op when they are in place)."""
        if self._live is None:
            return
        for live, variable in zip(self._live, self.variables):
            variable.assign(live)
        self._live = None

    @contextlib.contextmanager
    def applied(self):
        """The averaged weights in the model within the block, the live ones after
        (also on an error). Nested in put_in() it leaves them in."""
        put = self.put_in()
        try:
            yield self
        finally:
            if put:
                self.take_out()

    # -- resume state ---------------------------------------------------------------
    def save_state(self, path):
        """The shadow weights and the update count, atomically (.npz)."""
        arrays = {f"v{i:05d}": ops.convert_to_numpy(e) for i, e in enumerate(self.shadow)}
        with atomic_path(path) as temp:
            with open(temp, "wb") as handle:
                np.savez(handle, updates=np.int64(self.updates), **arrays)

    def load_state(self, path):
        """Read what save() wrote; False (and nothing changed) when it does not
        fit this model's weights."""
        with np.load(path, allow_pickle=False) as data:
            arrays = [data[f"v{i:05d}"] for i in range(len(self.shadow))
                      if f"v{i:05d}" in data.files]
            if len(data.files) != len(self.shadow) + 1 or any(
                    a.shape != tuple(e.shape) for a, e in zip(arrays, self.shadow)):
                return False
            updates = int(data["updates"])
        for array, ema in zip(arrays, self.shadow):
            ema.assign(array)
        self.updates = updates
        return True

    # -- the callback ----------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._steps = int(ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_end(self, batch, logs=None):
        # The optimizer's iterations count its updates (one per N batches under
        # gradient accumulation); under JAX, reading self.model syncs the weights.
        steps = int(ops.convert_to_numpy(self.model.optimizer.iterations))
        if steps != self._steps and finite(logs):
            self.update()
        self._steps = steps

    def on_test_begin(self, logs=None):
        self.put_in()

    def on_test_end(self, logs=None):
        self.take_out()

    def on_epoch_end(self, epoch, logs=None):
        self.put_in()

    def on_train_end(self, logs=None):
        self.take_out()

    def restorer(self):
        """The callback that puts the live weights back at the end of an epoch:
        place it after the callbacks that should see the averaged weights."""
        return _TakeOut(self)


class _TakeOut(keras.callbacks.Callback):
    def __init__(self, ema):
        super().__init__()
        self.ema = ema

    def on_epoch_end(self, epoch, logs=None):
        self.ema.take_out()
