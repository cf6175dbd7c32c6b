r"""Grad-CAM before/after training for a trained LOSO workdir (seed paper Figure 4).

  python -m mer_jax.gradcam_report --workdir=DIR [--fold=NAME] \
      [--layers=layer2,layer3] [--num_clips=4] [--data_dir=TFDS_DIR]

For each fold (default: every fold with checkpoints) this rebuilds the fold's
model from `DIR/config.json`, takes its state **before training** (the
trainer's initialisation: `jax.random.key(seed * 1_000_003 + fold_index)`,
split as in `train_state.fold_rngs`, plus the pretrained encoder if any) and
**after training** (the checkpoint the fold was tested with: the selected step
in `predictions.json`, else the latest), and renders Grad-CAM heat maps of the
held-out subject's clips for each layer. This is analysis, not selection, so
the test subject's clips are the natural ones to look at.

Writes, under `DIR/gradcam/`:
  <fold>_<layer>_before_after.png  rows: before, after, region mask; one column
                                   per clip (its middle sampled frame)
  summary.json                     per fold and layer: mean fraction of heat-map
                                   energy inside the region mask (all valid
                                   frames) before and after, and chance level
  events.out.tfevents.*            the same PNGs as TensorBoard images

The region mask is the one `mer_jax.layer_selection` scores with (motion_mask
on synthetic_me, else the face-region prior or config.transfer.region_mask_path).
Heat maps explain each clip's ground-truth class.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from mer_jax import gradcam
from mer_jax import input_pipeline
from mer_jax import layer_selection
from mer_jax import metric_writers
from mer_jax import schema
from mer_jax import train_state
from mer_jax import workdir as workdir_lib
from mer_jax.models import create_model

SUMMARY_FILE = "summary.json"


def _tuples(value: Any) -> Any:
  # config.json stores tuples as lists; module fields and folds want tuples back.
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config the trainer wrote to `workdir/config.json`.

  Raises:
    ValueError: no config.json, or one that no longer matches the run identity
      the workdir was trained under (an edited or replaced config).
  """
  run_dir = workdir_lib.Workdir(workdir)
  if not os.path.isfile(run_dir.config_json):
    raise ValueError(f"--workdir={workdir!r}: no config.json; is it a mer_jax training workdir?")
  config = ml_collections.ConfigDict(_tuples(workdir_lib.read_json(run_dir.config_json)))
  if os.path.exists(run_dir.identity_json):
    diffs = run_dir.differences(workdir_lib.config_identity(config))
    if diffs:
      raise ValueError(f"{run_dir.config_json} does not match the run identity the workdir was "
                       f"trained under ({run_dir.identity_json}): " + "; ".join(diffs[:5]))
  return config


def _restore_step(run_dir: workdir_lib.Workdir, fold: str,
                  manager: ocp.CheckpointManager) -> int:
  """The step the fold was tested with (its predictions file), else the latest checkpoint."""
  path = run_dir.predictions_json(fold)
  if os.path.exists(path):
    data = workdir_lib.read_json(path)
    records = data.get("predictions") if isinstance(data, dict) else None
    if not records:
      raise ValueError(f"{path}: not a mer_jax fold predictions file; cannot tell which "
                       "checkpoint the fold was tested with")
    if records[0].get("selected_step") is not None:
      return int(records[0]["selected_step"])
  step = manager.latest_step()
  if step is None:
    raise ValueError(f"{run_dir.checkpoints_dir(fold)}: no checkpoint to restore")
  return step


def _fold_states(config: ml_collections.ConfigDict, fold_index: int,
                 run_dir: workdir_lib.Workdir, fold: str):
  """(model, variables before training, variables after training, restored step)."""
  model = create_model(train_state.model_config(config), num_classes=schema.NUM_CLASSES)
  init_rng, _ = train_state.fold_rngs(config, fold_index)
  before = train_state.initial_state(config, model, init_rng)
  manager = ocp.CheckpointManager(run_dir.checkpoints_dir(fold))
  try:
    step = _restore_step(run_dir, fold, manager)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(jax.tree.map(np.asarray, before))))["state"]
  finally:
    manager.close()
  as_variables = lambda s: {"params": s.params, "batch_stats": s.batch_stats}
  return model, as_variables(before), as_variables(restored), step


def _png_as_image(path: str) -> np.ndarray:
  """A written PNG as uint8 `(1, H, W, 3)` for TensorBoard."""
  import matplotlib.image  # pylint: disable=import-outside-toplevel
  rgba = matplotlib.image.imread(path)
  return (np.clip(rgba[..., :3], 0, 1) * 255).round().astype(np.uint8)[None]


def _layer_file_name(layer: str) -> str:
  return layer.replace("/", "-")


def render_report(workdir: str, *, folds: Optional[Sequence[str]] = None,
                  layers: Optional[Sequence[str]] = None, num_clips: int = 4,
                  data_dir: Optional[str] = None) -> dict[str, Any]:
  """Renders the before/after Grad-CAM report of a trained workdir.

  Args:
    workdir: a `train.train_and_evaluate` workdir (config.json, folds/).
    folds: fold names (`folds/<name>`, e.g. "synthetic_me__s00"), or bare
      subject ids ("s00"); default every fold with checkpoints.
    layers: Grad-CAM layers (see `gradcam.resolve_layer_path`); default every
      stage the fold's (possibly truncated) encoder has.
    num_clips: held-out clips per picture (classes interleaved).
    data_dir: TFDS data_dir overriding the config's (records moved).

  Returns:
    The content written to `workdir/gradcam/summary.json`.
  """
  config = load_config(workdir)
  run_dir = workdir_lib.Workdir(workdir)
  if data_dir:
    config.dataset.data_dir = data_dir
  builder = input_pipeline.get_builder(config.dataset)
  if not builder.is_prepared():
    raise ValueError(f"dataset {builder.info.full_name} is not built in {builder.data_dir}; "
                     "pass --data_dir with the TFDS directory the run used")
  index = input_pipeline.read_clip_index(builder, config.dataset.split)
  all_folds = input_pipeline.loso_folds(
      index, folds=config.get("folds"),
      num_validation_subjects=config.get("num_validation_subjects", 0), seed=config.seed)
  trained = [(i, f) for i, f in enumerate(all_folds)
             if os.path.isdir(run_dir.checkpoints_dir(f.name))]
  if folds:
    chosen = []
    for name in folds:
      match = [(i, f) for i, f in trained
               if name in (f.name, f.test_subject, f.test_subject.split("/", 1)[1])]
      if not match:
        raise ValueError(f"--fold={name!r}: no trained fold of that name in {workdir}/folds; "
                         f"trained folds: {[f.name for _, f in trained]}")
      chosen += match
  else:
    chosen = trained
  if not chosen:
    raise ValueError(f"{workdir}/folds has no fold with checkpoints")

  out_dir = run_dir.gradcam_dir
  os.makedirs(out_dir, exist_ok=True)
  summary_path = os.path.join(out_dir, SUMMARY_FILE)
  summary: dict[str, Any] = {}
  if os.path.exists(summary_path):
    summary = workdir_lib.read_json(summary_path)
  writer = metric_writers.create_writer(out_dir, just_logging=jax.process_index() != 0)

  for fold_index, fold in chosen:
    fold_config = config
    if config.transfer.get("specific_layer") == layer_selection.AUTO:
      # The trainer resolved l_s per fold; rebuild the very same model.
      fold_config = layer_selection.config_for_fold(config, builder, fold, fold_index, run_dir)
    model, before, after, step = _fold_states(fold_config, fold_index, run_dir, fold.name)
    fold_layers = tuple(layers) if layers else layer_selection.candidate_layers(model.encoder)
    clip_ids = layer_selection.choose_clips(index, [fold.test_subject], num_clips,
                                            seed=config.seed)
    clips = layer_selection.read_clips(builder, fold_config, clip_ids, [fold.test_subject])
    middle = clips["frames"].shape[1] // 2
    images = clips["frames"][:, middle]
    columns = [f"{c.split('/')[-1]}\n{schema.CLASS_NAMES[l]}"
               for c, l in zip(clips["clip_id"], clips["label"])]
    regions = clips["region"][:, None]
    fold_summary = {
        "test_subject": fold.test_subject, "fold_index": fold_index, "step": step,
        "policy": fold_config.transfer.get("policy"),
        "specific_layer": fold_config.transfer.get("specific_layer"),
        "mask_source": clips["mask_source"], "chance": float(clips["region"].mean()),
        "clip_ids": clips["clip_id"].tolist(), "layers": {}}
    for layer in fold_layers:
      maps = {}
      for name, variables in (("before", before), ("after", after)):
        heat, _ = gradcam.grad_cam(model, variables, clips["frames"], clips["mask"],
                                   layer=layer, target_class=clips["label"])
        maps[name] = np.asarray(heat)
      fractions = {name: gradcam.mask_energy_fraction(heat, regions)
                   for name, heat in maps.items()}
      fold_summary["layers"][layer] = {
          name: (float(np.nanmean(f)) if np.isfinite(f).any() else None)
          for name, f in fractions.items()}
      path = os.path.join(out_dir, f"{fold.name}_{_layer_file_name(layer)}_before_after.png")
      gradcam.save_overlay_grid(
          images, np.stack([maps["before"][:, middle], maps["after"][:, middle],
                            clips["region"].astype(np.float32)]),
          path, row_labels=["before", f"after (step {step})", "mask"], column_labels=columns)
      writer.write_images(step, {f"gradcam/{fold.name}/{layer}": _png_as_image(path)})
      logging.info("fold %s layer %s: in-mask energy %.3f before, %.3f after (chance %.3f) -> %s",
                   fold.name, layer, fold_summary["layers"][layer]["before"] or float("nan"),
                   fold_summary["layers"][layer]["after"] or float("nan"),
                   fold_summary["chance"], path)
    summary[fold.name] = fold_summary
    run_dir.write_json(summary_path, summary, indent=1, sort_keys=False)
  writer.flush()
  writer.close()
  return summary


FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Trained LOSO workdir (config.json, folds/).")
flags.DEFINE_list("fold", None, "Fold name(s) or test subject id(s); default every trained fold.")
flags.DEFINE_list("layers", None, "Grad-CAM layers, e.g. layer2,layer3; default every stage.")
flags.DEFINE_integer("num_clips", 4, "Held-out clips per picture.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir overriding the one in config.json.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  summary = render_report(FLAGS.workdir, folds=FLAGS.fold, layers=FLAGS.layers,
                          num_clips=FLAGS.num_clips, data_dir=FLAGS.data_dir)
  print(json.dumps({fold: s["layers"] for fold, s in summary.items()}, indent=1))


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)
