"""Render a dry run of the plans (`pmkeeper plan`) as text or JSON."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from scheduler.generation import Projection
from scheduler.ports import Outcome


def projection_document(projection: Projection) -> dict[str, Any]:
    """Return the dry run as a JSON-ready document."""
    orders: list[dict[str, Any]] = []
    for item in projection.orders:
        planned = item.planned
        booking = item.booking
        orders.append(
            {
                "plan_id": planned.plan.id,
                "asset_id": planned.asset.id,
                "site": planned.asset.site,
                "due_at": planned.occurrence.due_at.isoformat(),
                "trigger": planned.occurrence.trigger,
                "outcome": planned.outcome.value,
                "late_catch_up": planned.occurrence.missed,
                "booking": None
                if booking is None
                else {
                    "technician_id": booking.technician_id,
                    "start_at": booking.start_at.isoformat(),
                    "end_at": booking.end_at.isoformat(),
                    "late": booking.late,
                },
                "unbooked_reason": item.unbooked_reason,
                "parts": [
                    {"sku": part.sku, "location": part.location, "quantity": str(part.quantity)}
                    for part in planned.plan.parts
                ]
                if planned.outcome is Outcome.GENERATED
                else [],
            }
        )
    return {
        "as_of": projection.now.isoformat(),
        "horizon_days": projection.horizon.total_seconds() / 86_400,
        "work_orders": sum(1 for o in orders if o["outcome"] == Outcome.GENERATED.value),
        "missed": sum(1 for o in orders if o["outcome"] == Outcome.MISSED.value),
        "booked": sum(1 for o in orders if o["booking"] is not None),
        "late": sum(1 for o in orders if o["booking"] is not None and o["booking"]["late"]),
        "unbooked": sum(
            1 for o in orders if o["outcome"] == Outcome.GENERATED.value and o["booking"] is None
        ),
        "orders": orders,
        "parts_demand": [
            {"sku": sku, "location": location, "quantity": str(quantity)}
            for (sku, location), quantity in sorted(projection.parts.items())
        ],
    }


def render_projection(projection: Projection, *, as_json: bool) -> str:
    """Return the dry run as one JSON document, or as a table a planner reads."""
    document = projection_document(projection)
    if as_json:
        return json.dumps(document, indent=2)
    lines = [
        f"dry run as of {document['as_of']}, {document['horizon_days']:g} days ahead: "
        f"{document['work_orders']} work orders ({document['booked']} booked, "
        f"{document['late']} late, {document['unbooked']} not bookable), "
        f"{document['missed']} missed; nothing was written",
        "",
    ]
    for order in document["orders"]:
        booking = order["booking"]
        if order["outcome"] == Outcome.MISSED.value:
            slot = "missed (plan says not to catch up)"
        elif booking is None:
            slot = f"NOT BOOKED: {order['unbooked_reason']}"
        else:
            late = "  LATE" if booking["late"] else ""
            slot = f"{booking['technician_id']} {booking['start_at']} - {booking['end_at']}{late}"
        lines.append(f"{order['due_at']}  {order['plan_id']:<24} {order['asset_id']:<20} {slot}")
    per_technician = Counter(
        order["booking"]["technician_id"] for order in document["orders"] if order["booking"]
    )
    if per_technician:
        lines += ["", "bookings per technician:"]
        lines += [f"  {tech:<24} {count}" for tech, count in sorted(per_technician.items())]
    lines += ["", "parts demand:"]
    if not document["parts_demand"]:
        lines.append("  none")
    for part in document["parts_demand"]:
        lines.append(f"  {part['sku']:<24} at {part['location']:<16} {part['quantity']}")
    return "\n".join(lines)
