"""Every public class documents itself in numpydoc form (Parameters, Attributes,
Examples), help() shows it, every constructor parameter is described, and the
examples run (issue 12, item 6). The nine estimators' examples run in
test_estimators.py; CI also runs ``pytest --doctest-modules fastrnn``."""
import doctest
import inspect
import pydoc
import re
import warnings

import pytest

import fastrnn
from fastrnn.dask import FlatSequences
from fastrnn.network import Network

EXCEPTIONS = (fastrnn.TrainingDivergedError, fastrnn.ModelFileError)
PUBLIC_CLASSES = sorted(
    [obj for name in fastrnn.__all__ if inspect.isclass(obj := getattr(fastrnn, name))
     and not issubclass(obj, Exception)] + [Network, FlatSequences],
    key=lambda cls: cls.__name__)
# the nine estimators' examples already run in test_estimators.py
EXAMPLES_TO_RUN = [cls for cls in PUBLIC_CLASSES
                   if cls not in fastrnn.estimators.ESTIMATORS.values()]


def section(doc, title):
    """The text of a numpydoc section, up to the next section."""
    match = re.search(rf"^\s*{title}\n\s*-{{{len(title)}}}\n(.*?)(?=^\s*\w+\n\s*-{{3,}}\n|\Z)",
                      doc, re.S | re.M)
    return match.group(1) if match else None


def documented_names(parameters_text):
    """Names on the unindented "name : type" lines (and "a, b : type" groups)
    of a section taken from inspect.getdoc (descriptions are indented)."""
    names = set()
    for line in parameters_text.splitlines():
        head = re.match(r"^([\w, ]+?)\s*:", line)
        if head:
            names.update(n.strip() for n in head.group(1).split(","))
    return names


@pytest.mark.parametrize("cls", PUBLIC_CLASSES, ids=lambda cls: cls.__name__)
def test_public_class_has_numpydoc_sections_shown_by_help(cls):
    doc = inspect.getdoc(cls)
    for title in ("Parameters", "Attributes", "Examples"):
        assert section(doc, title), f"{cls.__name__} lacks a {title} section"
    shown = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    for title in ("Parameters", "Attributes", "Examples"):
        assert f"{title}\n |  ----" in shown, f"help({cls.__name__}) does not show {title}"


@pytest.mark.parametrize("cls", PUBLIC_CLASSES, ids=lambda cls: cls.__name__)
def test_every_constructor_parameter_is_described(cls):
    signature = inspect.signature(cls.__init__)
    wanted = {name for name, p in signature.parameters.items()
              if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    documented = documented_names(section(inspect.getdoc(cls), "Parameters"))
    assert wanted <= documented, sorted(wanted - documented)


@pytest.mark.parametrize("cls", EXAMPLES_TO_RUN, ids=lambda cls: cls.__name__)
def test_examples_run(cls):
    tests = [t for t in doctest.DocTestFinder(recurse=False).find(cls, cls.__name__,
                                                                  globs={}) if t.examples]
    assert tests, f"{cls.__name__} has no runnable example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for test in tests:
            test.globs = dict(vars(inspect.getmodule(cls)))  # as --doctest-modules runs them
            runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_exceptions_say_what_they_mean():
    for exc in EXCEPTIONS:
        assert inspect.getdoc(exc) and len(inspect.getdoc(exc)) > 40
