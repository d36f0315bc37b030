"""errors.exit_on_error: how every program of the project ends on a mistake or a stop."""

import os
import signal

import pytest
from absl import flags

from resnet_cifar import errors


def _ends(main, *args, **wrapper_options):
    with pytest.raises(SystemExit) as ended:
        errors.exit_on_error(main, **wrapper_options)(*args)
    return ended.value.code


def test_a_user_error_is_one_line_naming_the_setting_and_exit_code_2(capsys):
    def main(argv):
        raise errors.UserError('expected a positive integer, got 0', 'train_steps')

    assert _ends(main, ['prog'], name=lambda key: f'--{key}') == 2
    assert capsys.readouterr().err == 'error: --train_steps: expected a positive integer, got 0\n'


def test_a_programs_flags_name_the_settings_that_are_flags(capsys):
    flag_values = flags.FlagValues()
    flags.DEFINE_integer('train_steps', 1, 'Steps.', flag_values=flag_values)

    def main():
        raise errors.UserError('0 is not a step count; the preset gives lrn_rate', 'train_steps', ['lrn_rate'])

    assert _ends(main, flag_values=flag_values) == 2
    assert capsys.readouterr().err == 'error: --train_steps: 0 is not a step count; the preset gives lrn_rate\n'


def test_an_os_error_names_the_file(tmp_path, capsys):
    def main():
        open(tmp_path / 'missing.txt')

    assert _ends(main) == 2
    assert capsys.readouterr().err == f'error: {tmp_path / "missing.txt"}: No such file or directory\n'


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_program_with_128_plus_its_number(sig, capsys):
    def main():
        os.kill(os.getpid(), sig)  # handled as an exception where the program is: it unwinds
        raise AssertionError('not reached')

    before = signal.getsignal(sig)
    assert _ends(main, stop_hint='; run the same command to resume') == 128 + sig
    assert capsys.readouterr().err == f'stopped by {sig.name}; run the same command to resume\n'
    assert signal.getsignal(sig) is before, 'the handlers are put back'


def test_main_returns_its_exit_code_and_other_exceptions_pass():
    assert errors.exit_on_error(lambda: 1)() == 1
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        errors.exit_on_error(lambda: 1 / 0)()
