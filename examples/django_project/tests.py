"""Runs under `manage.py test`: EventSourcedTestCase builds the application in setUp."""

from __future__ import annotations

from uwsgi_es.example.domain import BankAccounts
from uwsgi_es.integrations.django.testing import EventSourcedTestCase


class BankAccountsTest(EventSourcedTestCase):
    application_factory = BankAccounts

    def test_deposit_is_stored_once_in_the_django_store(self) -> None:
        bank = self.application
        assert isinstance(bank, BankAccounts)
        account = bank.open_account("django")
        bank.deposit(account.id, 25)
        self.assertEqual(bank.get_account(account.id).balance, 25)
        self.assertEqual([r.originator_version for r in bank.records.select(account.id)], [1, 2])
        self.assertEqual(type(bank.records).__name__, "DjangoRecordStore")
