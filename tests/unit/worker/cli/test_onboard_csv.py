"""The onboarding CSV: header and row checks with line numbers, chunks and their keys."""

from __future__ import annotations

import pytest

from worker.cli import onboard_csv
from worker.cli.onboard_csv import BadFile, check, chunk_key, chunks, file_digest, items

HEADER = "assistant_id,contact_type,phone_country,user_phone,email_local,first_name,last_name\n"


def write(tmp_path, text, name="in.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_bad_rows_are_reported_with_their_line_numbers_and_fields(tmp_path):
    path = write(tmp_path, HEADER
                 + "1,phone,US,,,,\n"                      # line 2: good
                 + "x,phone,US,,,,\n"                      # line 3: assistant_id
                 + "2,email,,,bad..local,Ada,\n"           # line 4: email_local, last_name
                 + "3,fax,,,,,\n"                          # line 5: contact_type
                 + "4,phone,ZZ,+1415,,,\n"                 # line 6: country, phone
                 + "1,phone,GB,,,,\n")                     # line 7: repeat of line 2
    problems = {bad.row: bad.message for bad in check(path)}
    assert set(problems) == {3, 4, 5, 6, 7}
    assert problems[3].startswith("assistant_id:")
    assert "email_local:" in problems[4] and "last_name:" in problems[4]
    assert "contact_type:" in problems[5]
    assert "phone_country:" in problems[6] and "user_phone:" in problems[6]
    assert "from row 2" in problems[7]


def test_header_must_name_known_columns(tmp_path):
    with pytest.raises(BadFile, match=r"missing column.*contact_type"):
        list(check(write(tmp_path, "assistant_id,phone_country\n1,US\n")))
    with pytest.raises(BadFile, match=r"unknown column.*phone_contry"):
        list(check(write(tmp_path, "assistant_id,contact_type,phone_contry\n1,phone,US\n")))
    with pytest.raises(BadFile, match="empty"):
        list(check(write(tmp_path, "")))


def test_items_carry_the_given_fields_and_drop_empty_cells(tmp_path):
    path = write(tmp_path, "\ufeff" + HEADER + "7,email,,, ada ,Ada,Lovelace\n8,phone,,,,,\n")
    assert [(i.row, i.body) for i in items(path)] == [
        (2, {"assistant_id": 7, "contact_type": "email", "email_local": "ada",
             "first_name": "Ada", "last_name": "Lovelace"}),
        (3, {"assistant_id": 8, "contact_type": "phone"}),
    ]


def test_chunks_are_bounded_by_items_and_bytes_and_stable(tmp_path, monkeypatch):
    path = write(tmp_path, HEADER + "".join(f"{n},phone,,,,,\n" for n in range(1, 26)))
    sizes = [len(chunk) for chunk in chunks(items(path), 10)]
    assert sizes == [10, 10, 5]
    monkeypatch.setattr(onboard_csv, "MAX_CHUNK_BYTES", 200)
    small = [[i.row for i in chunk] for chunk in chunks(items(path), 10)]
    assert all(len(chunk) < 10 for chunk in small) and sum(map(len, small)) == 25
    assert small == [[i.row for i in chunk] for chunk in chunks(items(path), 10)]


def test_chunk_keys_follow_the_file_content_and_chunking(tmp_path):
    one = file_digest(write(tmp_path, HEADER + "1,phone,,,,,\n", "a.csv"))
    same = file_digest(write(tmp_path, HEADER + "1,phone,,,,,\n", "b.csv"))
    other = file_digest(write(tmp_path, HEADER + "2,phone,,,,,\n", "c.csv"))
    assert chunk_key(one, 500, 0) == chunk_key(same, 500, 0)
    assert len({chunk_key(one, 500, 0), chunk_key(other, 500, 0), chunk_key(one, 500, 1),
                chunk_key(one, 100, 0)}) == 4
