"""Issue 11, point 13: LocalUser applies Windows' rules as the SAM does: account names that
end in "." or contain "@" are refused, and the complexity rule counts letters without case
as a category and currency symbols as none (the simulator answers the same:
tests/simulator/test_front_accounts.py)."""

from __future__ import annotations

import pytest

from iis_clientcert.errors import ValidationError
from iis_clientcert.providers.local_user import LocalUserProvider, password_problems


@pytest.mark.parametrize("name", ["svc.", "web01.", "a@b", "alice@contoso.com"])
def test_account_names_ending_in_a_period_or_with_at_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        LocalUserProvider().validate({"name": name, "password": "Str0ng-Pa55!"})
    assert err.value.property == "name"
    assert name in str(err.value)


@pytest.mark.parametrize("name", ["svc.web", "a.b.c", "x-1"])
def test_periods_inside_a_name_are_fine(name: str) -> None:
    assert LocalUserProvider().validate({"name": name, "password": "Str0ng-Pa55!"}).name == name


@pytest.mark.parametrize(
    ("password", "complex_enough"),
    [
        ("abcdefg1中", True),  # lower case, digit, a letter without case
        ("ABCDEFG中文x", True),  # upper, lower, letters without case
        ("abcdefg€£1", False),  # currency symbols are not special characters
        ("Abcdefgh€", False),
        ("Abcdefgh$", True),  # $ is on Microsoft's list
    ],
)
def test_complexity_counts_caseless_letters_and_not_currency(
    password: str, complex_enough: bool
) -> None:
    problems = password_problems(password, "svc", min_length=0, complexity=True)
    assert (problems == []) is complex_enough, problems
