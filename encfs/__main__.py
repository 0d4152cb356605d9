import sys

from encfs.remote import forward_if_needed

forward_if_needed(sys.argv[1:])  # before importing click: a user's Python may lack it

from encfs.cli import main  # noqa: E402

main()
