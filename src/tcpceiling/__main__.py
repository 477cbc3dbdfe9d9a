from tcpceiling.cli import run

run()
