import sys
import textwrap

import pytest

from plw_plugins import PromptLossWeightConfig, weight_policies
from plw_plugins.plugins import get_plugin_manager


def test_constant_is_the_default_and_holds_the_weight():
    config = PromptLossWeightConfig()
    assert config.prompt_loss_weight == 0.1 and config.prompt_loss_weight_policy == "constant"
    assert [config.weight_at(p) for p in (0.0, 0.5, 1.0)] == [0.1, 0.1, 0.1]


def test_linear_and_cosine_schedules_move_from_start_to_final():
    linear = PromptLossWeightConfig(1.0, "linear", 0.0)
    cosine = PromptLossWeightConfig(0.0, "cosine", 0.5)
    assert [linear.weight_at(p) for p in (0.0, 0.25, 1.0)] == pytest.approx([1.0, 0.75, 0.0])
    assert [cosine.weight_at(p) for p in (0.0, 0.5, 1.0)] == pytest.approx([0.0, 0.25, 0.5])
    assert linear.weight_at(1.7) == pytest.approx(0.0)  # progress past the end holds the final weight


def test_unknown_policy_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"prompt_loss_weight_policy='step' is not a registered policy; "
                                         r"registered: constant, cosine, linear"):
        PromptLossWeightConfig(0.1, "step")


def test_conflicting_and_missing_schedule_settings_are_errors():
    with pytest.raises(ValueError, match="prompt_loss_weight_final=0.5 has no effect"):
        PromptLossWeightConfig(0.1, "constant", 0.5)
    with pytest.raises(ValueError, match="'linear' needs prompt_loss_weight_final"):
        PromptLossWeightConfig(0.1, "linear")
    with pytest.raises(ValueError, match=r"prompt_loss_weight_final must be a number in \[0, 1\], got 3"):
        PromptLossWeightConfig(0.1, "linear", 3)
    with pytest.raises(ValueError, match="progress must be a number"):
        PromptLossWeightConfig().weight_at(float("nan"))


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A third-party distribution on sys.path that registers a policy through the entry-point group."""
    (tmp_path / "plw_step_policy.py").write_text(textwrap.dedent("""
        import plw_plugins

        class Step:
            def __init__(self, config):
                self.before, self.after = config.prompt_loss_weight, config.prompt_loss_weight_final

            def weight_at(self, progress):
                return self.before if progress < 0.5 else self.after

        class Broken:
            def __init__(self, config):
                pass

            def weight_at(self, progress):
                return 2.0

        @plw_plugins.hookimpl
        def register_weight_policies(register):
            register("step", Step)
            register("broken", Broken)
    """))
    dist_info = tmp_path / "plw_step_policy-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: plw-step-policy\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[plw_plugins]\nstep = plw_step_policy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    get_plugin_manager.cache_clear()
    yield
    sys.modules.pop("plw_step_policy", None)
    get_plugin_manager.cache_clear()


def test_a_third_party_policy_registered_through_an_entry_point_is_used(installed_plugin):
    assert {"constant", "linear", "cosine", "step"} <= set(weight_policies())
    config = PromptLossWeightConfig(0.2, "step", 0.6)
    assert (config.weight_at(0.1), config.weight_at(0.9)) == (0.2, 0.6)


def test_a_policy_that_returns_an_out_of_range_weight_is_caught(installed_plugin):
    with pytest.raises(ValueError, match=r"the weight of policy 'broken' must be a number in \[0, 1\], got 2.0"):
        PromptLossWeightConfig(0.1, "broken").weight_at(0.3)


def test_largest_weight_over_training():
    assert PromptLossWeightConfig(0.3).largest_weight() == 0.3
    assert PromptLossWeightConfig(0.0, "cosine", 0.4).largest_weight() == pytest.approx(0.4)
    assert PromptLossWeightConfig(0.7, "linear", 0.0).largest_weight() == pytest.approx(0.7)
    assert PromptLossWeightConfig(0.0).largest_weight() == 0.0


def test_largest_weight_of_a_third_party_policy_is_found_inside_training(installed_plugin):
    assert PromptLossWeightConfig(0.0, "step", 0.6).largest_weight() == 0.6  # from progress 0.5 on
    assert PromptLossWeightConfig(0.5, "step", 0.0).largest_weight() == 0.5
