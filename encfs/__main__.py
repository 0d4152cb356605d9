from encfs.cli import main

main()
