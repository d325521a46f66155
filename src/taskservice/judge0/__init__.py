"""The part of the Judge0 CE API (1.13.1) that clients use, under ``/judge0``.

Submissions are ordinary tasks of the caller (tokens are task ids); this package only
translates: ``requests`` reads Judge0's request bodies and parameters, ``views`` writes Judge0's
submissions, ``catalog`` holds its fixed tables (statuses, languages, configuration), and
``resources`` are the HTTP endpoints.
"""
