"""A test-only WSGI module: course bookings written with the eventsourcing library's newest kind of
application, ``eventsourcing.dcb``'s ``DCBApplication`` (not an ``Application`` subclass), on its
PostgreSQL module (``eventsourcing.dcb.postgres_tt``), deployed one per worker like the others.

A booking reads the course's bookings (its consistency boundary: the events tagged with the
course), decides, and appends on the condition that no booking of the course was appended since:
two workers booking the last seat at once cannot both succeed.
"""

from __future__ import annotations

import json

from eventsourcing.dcb.api import DCBAppendCondition, DCBEvent, DCBQuery, DCBQueryItem
from eventsourcing.dcb.application import DCBApplication
from eventsourcing.persistence import IntegrityError

from uwsgi_es.errors import CommandRejectedError, ConcurrencyError
from uwsgi_es.servers.uwsgi import install
from uwsgi_es.web.api import JsonApi
from uwsgi_es.web.bodies import BadRequestError
from uwsgi_es.web.http import Request, Response
from uwsgi_es.web.responses import json_response

ATTEMPTS = 50


class Courses(DCBApplication):
    def bookings(self, course: str) -> tuple[list[str], int | None]:
        """The students booked on ``course``, and the position the read reached."""
        query = DCBQuery(items=[DCBQueryItem(types=["Booked"], tags=[f"course:{course}"])])
        read = self.recorder.read(query)
        students = [json.loads(item.event.data)["student"] for item in read]
        return students, read.head

    def book(self, course: str, student: str, capacity: int) -> int:
        """Book ``student`` a seat; the booking's position. Refused when full or booked already."""
        boundary = DCBQuery(items=[DCBQueryItem(types=["Booked"], tags=[f"course:{course}"])])
        for _ in range(ATTEMPTS):
            students, head = self.bookings(course)
            if student in students:
                raise CommandRejectedError(f"{student} has a seat on {course} already")
            if len(students) >= capacity:
                raise CommandRejectedError(f"{course} is full ({capacity} seats)")
            event = DCBEvent("Booked", json.dumps({"student": student}).encode(), [f"course:{course}"])
            try:
                return self.recorder.append([event], DCBAppendCondition(boundary, after=head))
            except IntegrityError:  # a booking of the course was appended since the read: decide again
                continue
        raise ConcurrencyError(f"{course}: {ATTEMPTS} bookings in a row lost the race; retry")


api = JsonApi(Courses)


def courses(request: Request) -> Courses:
    app = api.application(request)
    if not isinstance(app, Courses):
        raise BadRequestError(f"this server runs {type(app).__qualname__}, not the course bookings", 404)
    return app


@api.route("/courses/<course>/bookings", "POST")
def book(request: Request, course: str) -> Response:
    body = api.body(request)
    student, capacity = body.get("student"), body.get("capacity")
    if not isinstance(student, str) or not isinstance(capacity, int) or isinstance(capacity, bool):
        raise BadRequestError('send {"student": a name, "capacity": a whole number}')
    return json_response({"position": courses(request).book(course, student, capacity)}, 201)


@api.route("/courses/<course>", "GET")
def course(request: Request, course: str) -> Response:
    students, _ = courses(request).bookings(course)
    return json_response({"booked": students})


install(Courses)
application = api
