"""git_commit: which changes mark a result as coming from a dirty checkout."""
import subprocess

import pytest

from pgd.provenance import git_commit


def _git(repo, *args):
    subprocess.run(['git', *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    _git(tmp_path, 'init', '-q')
    (tmp_path / 'code.py').write_text('x = 1\n')
    (tmp_path / 'results').mkdir()
    (tmp_path / 'results' / 'metrics.json').write_text('{}\n')
    _git(tmp_path, 'add', '.')
    _git(tmp_path, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'init')
    return tmp_path


def test_clean_checkout_is_the_bare_commit(repo):
    commit = git_commit(repo)
    assert len(commit) == 40 and not commit.endswith('-dirty')


def test_rewritten_results_do_not_make_it_dirty(repo):
    # a pipeline run rewrites committed results; that is not a change of the code
    (repo / 'results' / 'metrics.json').write_text('{"ap": 1}\n')
    assert not git_commit(repo).endswith('-dirty')
    assert not git_commit(repo / 'results').endswith('-dirty')


def test_changed_code_makes_it_dirty(repo):
    (repo / 'code.py').write_text('x = 2\n')
    assert git_commit(repo).endswith('-dirty')
    assert git_commit(repo / 'results').endswith('-dirty')


def test_outside_a_checkout_is_unknown(tmp_path):
    assert git_commit(tmp_path) == 'unknown'


def test_config_is_named_relative_to_the_checkout(tmp_path):
    from pgd.provenance import REPO_ROOT, provenance
    inside = provenance(REPO_ROOT / 'config' / 'detectors' / 'mini' / 'atss_r18_student.py')
    assert inside['config'] == 'config/detectors/mini/atss_r18_student.py'
    outside = tmp_path / 'my_config.py'
    outside.write_text('x = 1\n')
    assert provenance(outside)['config'] == str(outside)  # not in the checkout: kept as given


def test_run_info_dotted_keys_become_structured_options():
    """The workflow passes a run's options as ``options.k=9``; metrics.json stores a mapping."""
    from pgd.engine.test import nest_dotted
    got = nest_dotted({'run': 'distill/x/seed0', 'options.k': 9, 'options.branches': ['neck'],
                       'seed': 0})
    assert got == {'run': 'distill/x/seed0', 'options': {'k': 9, 'branches': ['neck']},
                   'seed': 0}
