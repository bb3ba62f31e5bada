"""TVM's native output: where it goes and the warnings read back from it."""

from tvmharness.native_log import RELOWERED, native_log_note, native_warnings


def test_a_warning_of_one_pass_over_the_model_counts_once_and_none_is_lost(tmp_path):
    log = tmp_path / "tvm-native.log"
    import_only, both = b"[x] Warning: only at import\n", b"[y] Warning: every lowering\n"
    log.write_bytes(import_only + both * 2 + RELOWERED + both * 2)
    assert native_warnings(log) == [{"message": "only at import", "count": 1}, {"message": "every lowering", "count": 2}]


def test_a_tune_names_the_most_frequent_warning_tvm_logged(tmp_path):
    log = tmp_path / "tvm-native.log"
    log.write_text('[00:24:35] apply_custom_rule.cc:64: Warning: Unknown schedule rule "meta_schedule.pool_max"\n'
                   "  s_tir.meta_schedule.cpu.meta_schedule.pool_max\n" + "[00:24:36] x.cc:1: Warning: other\n" * 3)
    assert native_log_note(log) == f"TVM's own output during the search (5 lines; most often (3x): other) is in {log}"
    log.write_text("Traceback (most recent call last):\nKeyboardInterrupt\n")  # a worker's, no warning
    assert native_log_note(log) == f"TVM's own output during the search (2 lines) is in {log}"
