from patchtool.cli.app import main

main()
