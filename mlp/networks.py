"""The multilayer perceptron: hidden layers on the flattened image, then softmax."""
from __future__ import annotations

from mlp.layers import hidden_layer, logistic_regression
from utils import rna
from utils.nn.layer import flatten, sequential
from utils.nn.network import Network, check_hidden_sizes, check_image_size, register_network


@register_network("mlp")
def build_mlp(*, im_dim=(48, 48), n_hidden=(1024,), activation="relu", batch_norm=True,
              p_drop=0.5, p_dropConv=None, gaussian_std=0.0, n_classes=7, last_pool=True,
              projection_shortcut=False) -> Network:
    # The conv-only options are accepted with their defaults so one launcher call fits all.
    if p_dropConv:
        raise ValueError(f"p_dropConv has {len(p_dropConv)} values but network mlp has 0 conv "
                         f"layers: leave p_dropConv empty")
    if last_pool is not True or projection_shortcut:
        raise ValueError("network mlp has no pooling and no residual blocks: last_pool and "
                         "projection_shortcut do not apply")
    activation = rna.get_activation(activation)
    p_drop = rna.check_probability(p_drop, "p_drop")
    hidden_sizes = check_hidden_sizes(n_hidden)
    height, width = check_image_size("mlp", list(im_dim), 0)
    common = dict(activation=activation, batch_norm=batch_norm, gaussian_std=gaussian_std)
    layers = [flatten()] + [hidden_layer(n, p_drop=p_drop, **common) for n in hidden_sizes]
    layers.append(logistic_regression(n_classes))
    options = dict(im_dim=[height, width], n_hidden=list(hidden_sizes),
                   activation=activation.name, batch_norm=batch_norm, p_drop=p_drop,
                   p_dropConv=[], gaussian_std=gaussian_std, n_classes=n_classes)
    return Network(name="mlp", body=sequential(layers, "mlp"), input_shape=(height, width, 1),
                   n_conv_layers=0, thesis_conv_params=0,
                   layer_names=tuple(layer.name for layer in layers), options=options)
