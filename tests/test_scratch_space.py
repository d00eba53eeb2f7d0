"""Where the tests write their throwaway files (tests/scratch_space.py): a tmpfs with room, else the system's."""

from __future__ import annotations

from pathlib import Path

from scratch_space import MIN_FREE_BYTES, is_tmpfs, release, scratch_parent

MOUNTS = """/dev/vda / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw,relatime,size=24683568k 0 0
tmpfs /run tmpfs rw,nosuid 0 0
"""


def test_a_tmpfs_with_room_is_chosen() -> None:
    assert scratch_parent({}, MOUNTS, MIN_FREE_BYTES) == Path("/dev/shm")


def test_a_tmpdir_of_the_person_running_the_tests_is_kept() -> None:
    assert scratch_parent({"TMPDIR": "/srv/tmp"}, MOUNTS, 10 * MIN_FREE_BYTES) is None


def test_a_small_or_missing_tmpfs_leaves_the_system_temporary_folder() -> None:
    assert scratch_parent({}, MOUNTS, MIN_FREE_BYTES - 1) is None  # Docker's default /dev/shm is 64 MB
    assert scratch_parent({}, MOUNTS.replace("tmpfs /dev/shm tmpfs", "/dev/vdb /dev/shm ext4"), MIN_FREE_BYTES) is None
    assert not is_tmpfs(Path("/"), MOUNTS) and is_tmpfs(Path("/run"), MOUNTS)


def test_a_passing_session_removes_its_folder_and_a_failing_one_keeps_it(tmp_path: Path) -> None:
    passed, failed = tmp_path / "passed", tmp_path / "failed"
    for folder in (passed, failed):
        (folder / "pytest-of-someone").mkdir(parents=True)
    assert release(passed, passed=True) is None and not passed.exists()
    message = release(failed, passed=False)
    assert failed.exists() and message is not None and str(failed) in message
