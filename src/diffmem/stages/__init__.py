"""The stages Snakemake calls, one module each, each with its `main(argv)`: `diffmem <stage> ...`.

A stage reads its inputs and config slice, calls the library (and the figures), and writes its
outputs atomically. The numerical library never imports a stage.
"""
