"""Names real data is full of: Unicode, quotes, formulas, duplicates, hostile paths."""

from __future__ import annotations

# --------------------------------------------------------------------------- names

# (first name, last name, username, email) of the students real data always has.
# Every course's student list starts with these (rotated), so any course with a few
# students holds some and the largest course (1001) holds all of them.
SPECIAL_STUDENTS: tuple[tuple[str, str, str, str], ...] = (
    ("Zoë", "Ørjansen", "zoe.orjansen", "zoe.orjansen@example.edu"),
    ("李", "雷", "li.lei", "li.lei@example.cn"),
    ("Smith, Jr.", "John", "john.smith.jr", "john.smith.jr@example.edu"),
    ('Robert "Bobby"', "O'Tables", "bobby.tables", "bobby+tables@example.edu"),
    ("Multi\nLine", "Name\r\nHere", "multi.line", "multi.line@example.edu"),
    ('=HYPERLINK("http://evil.example","click")', "=1+2", "=cmd", "cmd@example.edu"),
    ("+49 Plus", "-Minus", "+plus", "+plus@example.edu"),
    ("@Alice", "\tTabbed", "@alice", "alice@example.edu"),
    ("-1+1", "\rCarriage", "-minus", "-minus@example.edu"),
    ("Maria", "García", "maria.garcia", "maria.garcia@example.es"),
    ("Maria", "García", "maria.garcia2", "m.garcia@example.es"),
    ("Ana 🌸", "López 🚀", "ana.lopez", "ana.lopez@example.mx"),
    ("محمد", "عبدالله", "mohammed.abdullah", "m.abdullah@example.sa"),
    ("José", "Jose\u0301 Núñez", "jose.nunez", "jose.nunez@example.es"),  # NFD accent
    ("", "Sukarno", "sukarno", "sukarno@example.id"),
)

# fmt: off
FIRST_NAMES = (
    "Alice", "Bob", "Carla", "Dmitri", "Emma", "Farid", "Grace", "Hiroshi", "Ingrid", "Jamal",
    "Kateřina", "Liam", "Mei", "Noah", "Olga", "Pedro", "Quentin", "Rania", "Sven", "Tomás",
    "Uma", "Viktor", "Wen", "Xavier", "Yuki", "Zoë", "Ørjan", "Émile", "Siobhán", "Łukasz",
    "Ahmet", "Björk", "Chidi", "Daniela", "Eun-ji", "Fatima", "Giovanni", "Hannah", "Ivan",
    "Jürgen", "Maria", "John", "Priya", "Sofia", "Lars",
)
LAST_NAMES = (
    "Smith", "Müller", "García", "Nguyen", "Kowalski", "O'Brien", "Jensen", "Rossi", "Novák",
    "Tanaka", "Okafor", "Silva", "Schmidt", "Dubois", "Petrov", "Yılmaz", "Andersson", "Kim",
    "Chen", "Hernández", "van der Berg", "Søndergaard", "Papadopoulos", "Ivanova", "Lefèvre",
    "Khan", "Brown", "Wang", "de la Cruz", "Ó Súilleabháin",
)
# fmt: on
COURSE_NAMES = (
    "Intro to Python",
    'C/C++: Pointers, Memory & "Undefined Behaviour"',
    "Datenbanken & SQL – Grundlagen",
    "算法导论 (Algorithms)",
    "Web Development 101",
    "Machine Learning, Applied",
    "Data Structures",
    "Operating Systems",
)
# The first assignments of every course (rotated): duplicates and names that are
# unusable as folder names as they stand.
SPECIAL_ASSIGNMENT_NAMES = (
    "Homework",
    "Homework",
    "Lab 1/2: Loops *and* more?",
    "../../etc/passwd",
    "Final project...",
    "Übung 3 – Schleifen 🚀  ",
)
# fmt: off
ASSIGNMENT_NAMES = (
    "Quiz 1", "Exercise: Functions", "Homework", "CON", "Recursion", "Sorting", "Mini project",
    "Debugging", "Classes & Objects", "Files and I/O",
)
# fmt: on
BOOK_NAMES = (
    "Python Fundamentals",
    "Think Python, 2nd ed.",
    'SQL: "The Good Parts"',
    "Algorithmen – Eine Einführung",
)
STACKS = (
    {"id": "python-3.12", "name": "Python 3.12 (Ubuntu 24.04)"},
    {"id": "java-21", "name": "Java 21 (Temurin)"},
    {"id": "node-22", "name": "Node.js 22, npm 10"},
    {"id": "cpp-gcc14", "name": "C/C++ (GCC 14)"},
)
# Half-hour and 45-minute offsets catch code that assumes whole-hour zones.
# fmt: off
TIMEZONES = (
    "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Australia/Adelaide",
    "Pacific/Chatham", "UTC",
)
# fmt: on
PROJECT_PATHS = (
    "/home/project",
    "/home/project/main.py",
    "/home/project/src/app.py",
    "/home/project/README.md",
    "/home/project/notes with spaces.txt",
    "/home/project/données/été.csv",
    "/home/project/a/b/c/d/e/f/g/h/deep.txt",
    "/home/project/.gitignore",
    "/home/project/tests/test_main.py",
    "/home/project/index.html",
)
# fmt: off
TEXT_FILE_NAMES = (
    "main.py", "README.md", "src/app.py", "src/utils/helpers.py", "tests/test_main.py",
    "notes with spaces.txt", "données/été.csv", "日本語のメモ.txt", ".gitignore",
    ".config/settings.json", "index.html", "style.css", "Makefile", "notes [draft] v2.txt",
    "src/lib/core/engine/parts/x/y/z/deep_module.py", "emoji 🎉 notes.md", "data/input.csv",
    "Main.java",
)
BINARY_FILE_NAMES = (
    "data/blob.bin", "image.png", "archive.zip", "model.pkl", "report.pdf",
    "assets/photo 1.jpg", "build/a.out",
)
# fmt: on
# The first workspace of every course: one of each awkward kind of file.
# (relative path, "text" | "binary" | "empty")
SPECIAL_WORKSPACE_FILES = (
    (".gitignore", "text"),
    ("notes with spaces.txt", "text"),
    ("données/été 🎉.csv", "text"),
    ("a/b/c/d/e/f/g/h/deep.txt", "text"),
    ("empty.txt", "empty"),
    ("data/random.bin", "binary"),
    ("src/main.py", "text"),
)
# fmt: off
CODE_WORDS = (
    "def", "return", "for", "in", "range", "if", "else", "while", "import", "class", "self",
    "print", "value", "result", "items", "index", "count", "total", "data", "None", "True",
    "False", "append", "len", "sum", "list", "dict", "key", "node", "left", "right", "student",
    "score", "# TODO", "# fixme", "=", "+=", "==", "(", ")",
)
# fmt: on
