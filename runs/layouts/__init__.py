"""Runs other tools wrote: one module per layout, each with one runs.discovery.Detector.

They are registered here in order of precedence (the first detector that recognises a folder
wins), after runctl's own: a Hugging Face output_dir or a Lightning version_N/ also holds
TensorBoard events and checkpoint files, so the specific layouts come first, then nanoGPT's
out_dir, then a TensorBoard log folder, then any folder of checkpoint files.
"""

from runctl.runs.discovery import register_detector
from runctl.runs.layouts import hf_trainer, lightning, nanogpt, plain, tensorboard

for _module in (hf_trainer, lightning, nanogpt, tensorboard, plain):
    register_detector(_module.DETECTOR)
