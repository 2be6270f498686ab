"""Request context: who is asking, and what they may see.

Tenancy rule (as Neutron's default policy): a member sees and changes only the
objects of its own project; shared networks and external networks are also
readable; everything else of another project answers 404, never 403, so a
tenant cannot probe for other tenants' ids. Admins see everything.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Context:
    project_id: str
    is_admin: bool = False

    @classmethod
    def admin(cls, project_id: str = "admin") -> Context:
        return cls(project_id=project_id, is_admin=True)

    def owns(self, project_id: str | None) -> bool:
        return self.is_admin or project_id == self.project_id

    def project_for_create(self, requested: str | None) -> str:
        """The project a new object belongs to: admins may create for others."""
        from netvirt.northbound.errors import Forbidden

        if requested is None or requested == self.project_id:
            return self.project_id
        if not self.is_admin:
            raise Forbidden("Only admins may create resources for another project.")
        return requested
