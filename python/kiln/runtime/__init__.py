"""Kiln's runtime, modelled on IREE's HAL: Device, Buffer, Executable, CommandBuffer and Program.

    program = kiln.runtime.load("block.kiln")     # checks format, hashes, version, target
    (y,) = program.block(x, positions, *weights)  # one native call per entry point
"""

from .device import Buffer, Device
from .program import CommandBuffer, EntryPoint, Executable, Program, load, load_artifact

__all__ = ["Buffer", "CommandBuffer", "Device", "EntryPoint", "Executable", "Program", "load", "load_artifact"]
