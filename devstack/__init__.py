"""The local stack: real Mosquitto, InfluxDB and PostgreSQL as plain processes on loopback ports.

No Docker and no systemd exist on the machines this project is built on, so the project starts its
own services, keeps their state in a git-ignored folder and writes every connection setting to a
sourceable env file.
"""
