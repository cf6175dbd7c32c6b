"""TFDS builder of `synthetic_me`, the procedural micro-expression benchmark.

Every clip is rendered by `mer_jax.synthetic` from the builder config: nothing
is downloaded and the same config always writes byte-identical records.

  import data_builders.synthetic_me  # registers the builder
  builder = tfds.builder("synthetic_me/default", data_dir=...)
  builder.download_and_prepare()
  source = builder.as_data_source(split="train")  # ArrayRecord: by index, no TensorFlow

One `train` split holds every clip; leave-one-subject-out folds are made from
the `subject` field ("s00", "s01", ...) by the input pipeline. A custom
dataset is a config: `Builder(config=SyntheticMeConfig(name="mine",
params=synthetic.SyntheticConfig(amplitude_px=0.4, ...)))`.

`composite` and `composite_dev` (params: `synthetic.CompositeConfig`) are
shaped like the MEGC2019 composite: three recording setups whose records say
which in `dataset` (`synthetic_smic_hs`, `synthetic_casme2`,
`synthetic_samm`), with their own frame sizes, so frames have no fixed
height/width; their records carry no `apex_flow`/`motion_mask` (re-render a
clip with `synthetic.render_planned_clip` for its ground truth). These two
configs have their own version: adding them left the other configs' version
and records unchanged.
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from data_builders import records
from mer_jax import schema
from mer_jax import synthetic

_DESCRIPTION = """\
Procedural facial micro-expression clips with exact ground truth. Each clip
warps a synthetic subject's neutral face with a smooth action-unit
displacement field (negative = AU4+AU15, positive = AU6+AU12, surprise =
AU1+AU2+AU26) that rises from onset to apex and falls back by offset, under
label-independent nuisances (head motion, sensor noise, illumination flicker,
blinks, distractor AUs). `apex_flow` is the apex displacement field and
`motion_mask` marks where it is non-negligible. See docs/synthetic_me.md.
"""


@dataclasses.dataclass(eq=False)
class SyntheticMeConfig(tfds.core.BuilderConfig):
  """A `synthetic_me` variant.

  Attributes:
    params: every renderer and dataset-size parameter (`num_subjects`,
      `clips_per_class_per_subject`, `num_frames`, `size`, `fps`,
      `amplitude_px`, durations, `seed`, `nuisances`, ...), or a
      `synthetic.CompositeConfig` for a composite-shaped tier.
  """
  params: synthetic.SyntheticConfig | synthetic.CompositeConfig = dataclasses.field(
      default_factory=synthetic.SyntheticConfig)

  def __post_init__(self):
    if not isinstance(self.params, (synthetic.SyntheticConfig, synthetic.CompositeConfig)):
      raise ValueError(
          f"SyntheticMeConfig {self.name!r}: params must be a mer_jax.synthetic.SyntheticConfig "
          f"or CompositeConfig, got {type(self.params).__name__}")
    if self.description is None:
      self.description = (describe_composite(self.params) if self.is_composite
                          else describe(self.params))

  @property
  def is_composite(self) -> bool:
    return isinstance(self.params, synthetic.CompositeConfig)


def describe(params: synthetic.SyntheticConfig) -> str:
  """One-line summary of a config, stored as the TFDS config description."""
  n = params.nuisances
  return (
      f"{params.num_subjects} subjects x {schema.NUM_CLASSES} classes x "
      f"{params.clips_per_class_per_subject} clips = {params.num_clips} clips of "
      f"{params.num_frames} frames, {params.size}x{params.size} px at {params.fps:g} fps; "
      f"peak motion {params.amplitude_px:g} px; durations {params.min_duration_s:g}-"
      f"{params.max_duration_s:g} s; seed {params.seed}; nuisances: head "
      f"{n.head_translation_px:g} px / {n.head_rotation_deg:g} deg, noise std "
      f"{n.noise_std:g}, flicker {n.flicker:g}, blink p={n.blink_prob:g}, distractor AU "
      f"p={n.distractor_prob:g} at {n.distractor_amplitude_px:g} px.")


def describe_composite(params: synthetic.CompositeConfig) -> str:
  """One-line summary of a composite config, stored as the TFDS config description."""
  parts = []
  for subset in params.subsets:
    p, n = subset.params, subset.params.nuisances
    parts.append(
        f"{subset.name}: {subset.num_subjects} subjects, {subset.num_clips} clips, "
        f"{p.size}x{p.size} px {'mono' if p.grayscale else 'colour'} at {p.fps:g} fps, "
        f"peak motion {p.amplitude_px:g} px (median), apex "
        f"{'annotated' if subset.apex_annotated else 'midpoint of onset..offset'}, head "
        f"{n.head_translation_px:g} px / {n.head_rotation_deg:g} deg, noise std {n.noise_std:g}")
  return (f"MEGC2019-composite-shaped: {params.num_clips} clips, {params.num_subjects} subjects, "
          f"seed {params.seed}; " + "; ".join(parts) + ".")


# Composite tiers carry their own version, so adding or revising them never
# touches the version (and cached records) of the configs above.
_RECORDS_NOTE = ("Records readable without TensorFlow (issue 12): ArrayRecord files read by "
                 "index, `frames` a Sequence(Image) of PNGs (was a TFRecord Video); same pixels. "
                 "Rebuild: `python -m data_builders.build synthetic_me/CONFIG`.")
_COMPOSITE_VERSION = tfds.core.Version("2.0.0")
_COMPOSITE_RELEASE_NOTES = {"1.0.0": "MEGC2019-composite-shaped tier (issue 14), calibrated "
                                     "against benchmarks/classical_baseline.py.",
                            "2.0.0": _RECORDS_NOTE}


class Builder(records.ArrayRecordBuilder):
  """DatasetBuilder for `synthetic_me`."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.", "2.0.0": _RECORDS_NOTE}
  BUILDER_CONFIGS = [
      SyntheticMeConfig(name=name, params=params) for name, params in synthetic.PRESETS.items()
  ] + [
      SyntheticMeConfig(name=name, params=params, version=_COMPOSITE_VERSION,
                        release_notes=_COMPOSITE_RELEASE_NOTES)
      for name, params in synthetic.COMPOSITE_PRESETS.items()
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    params = self.builder_config.params
    extra_features = {"distractor_action_units": tfds.features.Text()}
    if self.builder_config.is_composite:
      # Three frame sizes in one dataset: the schema's ground-truth fields need
      # one fixed size, so they are left out (re-render a clip for them).
      features = schema.features(extra_features=extra_features)
    else:
      features = schema.features(height=params.size, width=params.size, with_ground_truth=True,
                                 extra_features=extra_features)
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=features,
        supervised_keys=("frames", "label"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download: clips are rendered.
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    config_name = self.builder_config.name
    keys = set(self.info.features.keys())
    params = self.builder_config.params
    clips = (synthetic.generate_composite(params) if self.builder_config.is_composite
             else synthetic.generate_dataset(params))
    for clip_id, example in clips:
      schema.validate_example(example, where=f"synthetic_me/{config_name} clip {clip_id}")
      # `Sequence(Image)` stores encoded frames as given: no TF needed, and OpenCV's
      # PNG encoder is ~15x faster than TFDS's per-frame TF encoding.
      example["frames"] = schema.encode_frames(example["frames"], "png")
      yield clip_id, {key: example[key] for key in keys}
