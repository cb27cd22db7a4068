"""Studies: named workflows. Names are unique; ``create`` is idempotent."""

from __future__ import annotations

from merlin_tracking.errors import StudyNotFoundError
from merlin_tracking.ids import new_id
from merlin_tracking.managers.base import Manager, require_text
from merlin_tracking.records import Study


class StudyManager(Manager[Study]):
    record_type = Study
    not_found = StudyNotFoundError

    def create(self, name: str) -> Study:
        """The study called ``name``, created if it does not exist yet."""
        for _ in range(3):
            study, stored_id, created = self._ensure(name)
            if created and stored_id == study.id:
                return study
            try:
                return self.get(stored_id)
            except StudyNotFoundError:
                continue  # deleted between the two calls: create it again
        raise StudyNotFoundError(name, "it keeps being deleted while it is created")

    def ensure_id(self, name: str) -> str:
        """Id of the study called ``name``, creating it if needed (one round trip)."""
        return self._ensure(name)[1]

    def candidate(self, name: str) -> Study:
        """The study to create if none is called ``name`` (a fresh id; nothing stored)."""
        study_id, created_at = new_id()
        return Study(id=study_id, name=require_text("study name", name), created_at=created_at)

    def _ensure(self, name: str) -> tuple[Study, str, bool]:
        study = self.candidate(name)
        stored_id, created = self.store.create_study(study)
        return study, stored_id, created

    def get(self, study_id_or_name: str) -> Study:
        """The study with this id, else with this name; ``StudyNotFoundError`` otherwise."""
        return self._fetch(study_id_or_name)

    def delete(self, study_id_or_name: str, remove_associated_runs: bool = True) -> None:
        """Delete a study and its runs; with ``remove_associated_runs=False`` the runs stay,
        detached (their ``study_id`` becomes None) so no reference dangles."""
        study = self.get(study_id_or_name)
        if not self.store.delete_study(study.id, remove_associated_runs):
            raise StudyNotFoundError(study_id_or_name)

    def delete_all(self, remove_associated_runs: bool = True) -> int:
        """Delete every study (and by default every run of theirs); return how many."""
        deleted = 0
        for study_id in self.store.find_ids(Study, {}):
            deleted += self.store.delete_study(study_id, remove_associated_runs)
        return deleted
