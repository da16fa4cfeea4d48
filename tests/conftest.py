import pytest
import torch

# one thread: small convolutions gain nothing from more, and oversubscribed cores slow them tenfold
torch.set_num_threads(1)


def codes_matter(model):
    """Give the zero-initialised output convolutions small weights (as after some training), so decodes follow
    the codes; returns the model. Imported by the tests as ``from conftest import codes_matter``."""
    for mod in model.decoder.modules():
        if getattr(mod, "out_layers", None) is not None:
            torch.nn.init.normal_(mod.out_layers[3].weight, std=0.05)
    torch.nn.init.normal_(model.decoder.out[2].weight, std=0.05)
    return model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_notebook(path, body):
    """A two-cell study notebook (a tagged parameters cell, then ``body``) for the pipeline's own tests.
    Imported by the tests as ``from conftest import tiny_notebook``."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell('out_dir = "unused"\nvalue = 0')
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "hdae", "display_name": "Python (hdae)", "language": "python"}
    nbformat.write(nb, path)
