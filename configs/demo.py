"""Demo: the synthetic default benchmark on a laptop CPU in minutes.

  python -m mer_jax.main --config=configs/demo.py --workdir=/tmp/mer_demo
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset.builder_config = "default"
  return config
