"""The names of the services a supervisor runs, written once: every other list of them derives from here.

The ctl, the dashboard, the fleet page and the history ring all name services; a second copy of the
list is how a new service ends up controllable from one place and invisible in another.
"""

#: what a supervisor runs, in the order it starts them
SERVICES = ("dashboard", "bot")
#: what restart, start and stop accept: one service, or all of them
TARGETS = SERVICES + ("all",)
#: the processes of a stack, each with its pidfile under run/ (the supervisor and what it runs)
PROCESSES = ("supervisor",) + SERVICES
#: whose log files there are (the supervisor writes its own)
LOGS = PROCESSES
#: whose figures the history ring keeps, in the ring's column order (changing it changes the file format)
SAMPLED = PROCESSES
