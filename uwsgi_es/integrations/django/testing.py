"""``EventSourcedTestCase``: a Django test case with this process's application built in ``setUp``
and closed in ``tearDown``, on the Django store (the test database Django made)."""

from __future__ import annotations

from typing import Any, ClassVar

from django.test import TransactionTestCase

from uwsgi_es.lifecycle import registry
from uwsgi_es.settings import Settings


class EventSourcedTestCase(TransactionTestCase):
    """Set ``application_factory``; use ``self.application`` in tests."""

    application_factory: ClassVar[registry.ApplicationFactory | None] = None
    application: Any

    def setUp(self) -> None:
        super().setUp()
        registry.close_application()
        self.application = registry.init_application(
            self.application_factory, settings=Settings(store="django")
        )

    def tearDown(self) -> None:
        registry.close_application()
        super().tearDown()
