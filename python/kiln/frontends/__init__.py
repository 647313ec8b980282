"""Frontends: ways into Kiln other than transformer-dialect IR.

`kiln.frontends.torch.compile_module(module, example_args)` compiles any `torch.nn.Module` (through
torch.export and torch-mlir, run in a child process), raising the patterns Kiln has kernels for to
`transformer` ops. Submodules are imported on demand so `import kiln` never pulls in torch.
"""
