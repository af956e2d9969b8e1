"""Hand-written class prompts: a dataset's zero-shot template (``prompt_template``, one ``{}`` for the
class name) filled with each class name, or CoOp's ``a photo of a {}.`` for a dataset without one (a
Dassl dataset of another repository). Zero-shot classifies with them, fine-tuning starts its class
vectors from them, and re-tuning takes its starting words from the template."""
DEFAULT_TEMPLATE = "a photo of a {}."


def class_prompts(dataset):
    template = getattr(dataset, "prompt_template", DEFAULT_TEMPLATE)
    return [template.format(name.replace("_", " ")) for name in dataset.classnames]
