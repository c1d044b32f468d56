"""``python -m cca.data.synthetic``: see :func:`cca.data.synthetic.main`."""

from cca.data.synthetic import main

if __name__ == "__main__":
    raise SystemExit(main())
