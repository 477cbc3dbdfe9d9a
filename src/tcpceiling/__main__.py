from tcpceiling.cli import main

main()
