"""``python -m lambdactl`` runs the same CLI as the ``lambdactl`` script."""

from lambdactl.main import main

main()
