import sys

try:
    from metarl.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python imports the command line
    print("metarl: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
