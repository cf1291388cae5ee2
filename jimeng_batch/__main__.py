"""`python -m jimeng_batch` runs the command-line interface."""

from jimeng_batch.cli import main

if __name__ == "__main__":
    main()
