"""Insight into a trained CNN: activation maps of each convolution block and Grad-CAM heat maps.

- :func:`block_layer_names` finds, for any registered architecture, the last
  feature-map layer at each spatial resolution (the output of each
  convolution block, before its pooling); :func:`activation_maps` returns their
  activations for one face.
- :func:`grad_cam` (Selvaraju et al. 2017) weighs the last block's feature
  maps by the mean gradient of a class's logit with respect to them, keeps
  the positive part and scales it to the face: where the network looked.
- :func:`explain_face` draws both as PNG files.

Keras 3 has no backend-neutral gradient call, so :func:`_gradient` is the one
small function that uses the active backend's own automatic differentiation
(TensorFlow's GradientTape, ``jax.grad`` or ``torch.autograd``), each imported
only when that backend is the active one.  Everything else uses ``keras`` and
``keras.ops`` only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import require_keras

keras = require_keras()
from keras import layers, ops  # noqa: E402  (after the clear missing-extra error above)

# Layers that only resample or regularise: their output is not a new block.
_NOT_A_BLOCK = (
    layers.MaxPooling2D, layers.AveragePooling2D, layers.Dropout, layers.SpatialDropout2D, layers.ZeroPadding2D,
    layers.Rescaling, layers.Normalization, layers.Resizing,
)
_CONVOLUTIONS = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D)


def block_layer_names(net) -> list:
    """Names of the last feature-map layer at each spatial resolution, from the first convolution on.

    For ``seed`` these are the four convolutions; for ``vgg`` the last ReLU of
    each block; for ``mobilenet_v2`` the last layer at 48, 24, 12, 6 and 3 pixels.

    Parameters
    ----------
    net : keras.Model
        A functional model (as built by :mod:`fer_deep.architectures`).

    Returns
    -------
    list of str
    """
    last_at = {}
    seen_convolution = False
    for layer in net.layers:
        seen_convolution = seen_convolution or isinstance(layer, _CONVOLUTIONS)
        if not seen_convolution or isinstance(layer, _NOT_A_BLOCK):
            continue
        shape = tuple(layer.output.shape)
        if len(shape) != 4:
            continue
        # Re-assigning keeps the key's first position, so resolutions stay in network order.
        last_at[shape[1:3]] = layer.name
    if not last_at:
        raise ValueError(f"model {net.name!r} has no convolutional feature maps to show")
    return list(last_at.values())


def _face_input(face) -> np.ndarray:
    face = np.asarray(face)
    if face.ndim == 3 and face.shape[-1] == 1:
        face = face[..., 0]
    if face.ndim != 2:
        raise ValueError(f"a face must be one gray image shaped (48, 48), got shape {face.shape}")
    return face.astype(np.float32)[None, :, :, None]


def activation_maps(net, face, *, layer_names=None) -> list:
    """Activations of each convolution block for one face.

    Parameters
    ----------
    net : keras.Model
        The inference network (``DeepModel.model_``).
    face : array (48, 48)
        One gray face, pixels 0..255.
    layer_names : list of str, optional
        Layers to read; default :func:`block_layer_names`.

    Returns
    -------
    list of (str, ndarray)
        ``(layer name, activations (h, w, channels))`` in network order.
    """
    names = list(layer_names or block_layer_names(net))
    probe = keras.Model(net.input, [net.get_layer(name).output for name in names])
    # A direct (eager) call: for one face, cheaper than compiling a predict function.
    outputs = probe(_face_input(face), training=False)
    return [(name, ops.convert_to_numpy(output)[0]) for name, output in zip(names, outputs)]


def _gradient(function, value: np.ndarray) -> np.ndarray:
    """Gradient of the scalar ``function(x)`` at ``x = value``, by the active Keras backend.

    Keras 3 offers no backend-neutral ``grad``; this is the only place where a
    backend library is used directly, each one imported only when it is the
    active backend (so no backend is required by the rest of fer_deep).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(value)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = function(x)
        return np.asarray(tape.gradient(y, x))
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(function)(jax.numpy.asarray(value)))
    if backend == "torch":
        x = ops.convert_to_tensor(value)  # on the device Keras uses
        x = x.detach().requires_grad_(True)
        function(x).backward()
        return ops.convert_to_numpy(x.grad)
    raise NotImplementedError(f"Grad-CAM needs gradients; the Keras backend {backend!r} is not supported")


def grad_cam(net, face, class_index: int, *, layer_name: str | None = None) -> np.ndarray:
    """Grad-CAM heat map of class ``class_index`` for one face, scaled to the face and to 0..1.

    Parameters
    ----------
    net : keras.Model
        The inference network, whose last layer is the softmax ``Dense``.
    face : array (48, 48)
        One gray face, pixels 0..255.
    class_index : int
        The class whose evidence to show.
    layer_name : str, optional
        The feature-map layer; default the last one of :func:`block_layer_names`.

    Returns
    -------
    ndarray (48, 48)
        Non-negative, maximum 1 (all zeros if no location speaks for the class).
    """
    name = layer_name or block_layer_names(net)[-1]
    feature_tensor = net.get_layer(name).output
    features = ops.convert_to_numpy(keras.Model(net.input, feature_tensor)(_face_input(face), training=False))
    last = net.layers[-1]
    if isinstance(last, layers.Dense):
        # Grad-CAM differentiates the class logit, not the softmax (which saturates):
        # replay the network up to the last Dense and apply its weights without activation.
        to_penultimate = keras.Model(feature_tensor, last.input)

        def score(a):
            logits = ops.matmul(to_penultimate(a, training=False), last.kernel)
            if last.use_bias:
                logits = logits + last.bias
            return ops.sum(logits[:, class_index])
    else:
        head = keras.Model(feature_tensor, net.output)

        def score(a):
            return ops.sum(ops.log(head(a, training=False)[:, class_index] + 1e-12))

    gradients = _gradient(score, features)[0]  # (h, w, channels)
    weights = gradients.mean(axis=(0, 1))
    cam = np.maximum((features[0] * weights).sum(axis=-1), 0.0)
    side = _face_input(face).shape[1:3]
    cam = np.asarray(ops.convert_to_numpy(ops.image.resize(cam[None, :, :, None], side, interpolation="bilinear")))
    cam = np.maximum(cam[0, :, :, 0], 0.0)
    peak = cam.max()
    return cam / peak if peak > 0 else cam


# --------------------------------------------------------------------------- pictures


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_activation_maps(face, maps, path, *, channels: int = 8) -> Path:
    """One row per block: the face, the mean activation, then the most active channels.

    Parameters
    ----------
    face : array (48, 48)
    maps : list of (str, ndarray)
        As returned by :func:`activation_maps`.
    path : path
        Output PNG.
    channels : int
        Most active channels shown per block.

    Returns
    -------
    Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = channels + 2
    figure = _figure(1.3 * columns, 1.45 * len(maps))
    for row, (name, activation) in enumerate(maps):
        strongest = np.argsort(activation.mean(axis=(0, 1)))[::-1][:channels]
        panels = [("face", np.asarray(face), "gray"), (f"{name}\nmean", activation.mean(axis=-1), "viridis")]
        panels += [(f"channel {c}", activation[:, :, c], "viridis") for c in strongest]
        for column, (title, image, cmap) in enumerate(panels):
            axes = figure.add_subplot(len(maps), columns, row * columns + column + 1)
            axes.imshow(image, cmap=cmap)
            axes.set_title(title if column != 1 else f"{title} {activation.shape[0]}x{activation.shape[1]}",
                           fontsize=6)
            axes.axis("off")
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def plot_grad_cam(face, cam, probabilities, classes, class_index, path) -> Path:
    """The face, the Grad-CAM heat map over it, and the class probabilities, side by side."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = _figure(10, 3.4)
    axes = figure.add_subplot(1, 3, 1)
    axes.imshow(face, cmap="gray")
    axes.set_title("face")
    axes.axis("off")
    axes = figure.add_subplot(1, 3, 2)
    axes.imshow(face, cmap="gray")
    axes.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    axes.set_title(f"Grad-CAM: {classes[class_index]}")
    axes.axis("off")
    axes = figure.add_subplot(1, 3, 3)
    colours = ["tab:orange" if i == class_index else "tab:blue" for i in range(len(classes))]
    axes.barh(range(len(classes)), probabilities, color=colours)
    axes.set_yticks(range(len(classes)), classes)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("probability")
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def explain_face(model, face, out_dir, *, target=None, stem: str = "face") -> dict:
    """Write the activation maps and the Grad-CAM heat map of one face as PNG files.

    Parameters
    ----------
    model : fer_deep.model.DeepModel
        A fitted or loaded deep model.
    face : array (48, 48)
        One gray face, ``uint8``.
    out_dir : path
        Folder for ``<stem>-activations.png`` and ``<stem>-gradcam.png``.
    target : str or int, optional
        Class to explain (name or index); default the predicted class.
    stem : str
        File-name prefix.

    Returns
    -------
    dict
        ``predicted``, ``target``, ``probabilities`` (class -> probability),
        ``blocks`` (layer names), ``activations_png``, ``gradcam_png``.
    """
    face = np.asarray(face)
    if face.ndim != 2:
        raise ValueError(f"a face must be one gray image shaped (48, 48), got shape {face.shape}")
    classes = list(model.classes_)
    probabilities = model.predict_proba(face[None])[0]
    predicted = int(np.argmax(probabilities))
    if target is None:
        class_index = predicted
    elif isinstance(target, (int, np.integer)) and 0 <= int(target) < len(classes):
        class_index = int(target)
    elif str(target) in classes:
        class_index = classes.index(str(target))
    else:
        raise ValueError(f"unknown class {target!r}; classes are {', '.join(classes)}")
    net = model.model_
    maps = activation_maps(net, face)
    cam = grad_cam(net, face, class_index, layer_name=maps[-1][0])
    out_dir = Path(out_dir)
    activations_png = plot_activation_maps(face, maps, out_dir / f"{stem}-activations.png")
    gradcam_png = plot_grad_cam(face, cam, probabilities, classes, class_index, out_dir / f"{stem}-gradcam.png")
    return {
        "predicted": classes[predicted],
        "target": classes[class_index],
        "probabilities": {name: float(p) for name, p in zip(classes, probabilities)},
        "blocks": [name for name, _ in maps],
        "activations_png": str(activations_png),
        "gradcam_png": str(gradcam_png),
    }
