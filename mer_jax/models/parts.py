"""Imports every built-in model part so that it registers itself by name.

Add one import line here for each new part module.
"""

# pylint: disable=unused-import
from mer_jax.models import attention  # noqa: F401  "attention" pool, "temporal_softmax" head
from mer_jax.models import pooling  # noqa: F401  mean/grid/flatten pools, mean/frames heads
from mer_jax.models import recurrent  # noqa: F401  rnn, lstm, gru, bilstm, bigru heads
from mer_jax.models import resnet  # noqa: F401  resnet, resnet18/34/50 encoders
from mer_jax.models import small_cnn  # noqa: F401  small_cnn encoder
from mer_jax.models import tcn  # noqa: F401  tcn, ed_tcn heads
