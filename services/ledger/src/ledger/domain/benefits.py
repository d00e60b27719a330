"""Which multipliers a purchase earns: the member's tier and the running bonus campaigns.

The rules service decides both; the ledger keeps what it announced (``loyalty follow``)
and applies it here at earn time.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from ledger.domain.account import EarnBonus, Purchase
from ledger.domain.program import Tier


@dataclass(frozen=True)
class BonusCampaign:
    """A bonus campaign running at the purchase's time; empty filters match everything."""

    name: str
    multiplier: Decimal
    channels: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    store_ids: frozenset[str] = frozenset()
    tiers: frozenset[str] = frozenset()


def earn_bonuses(
    purchase: Purchase,
    ladder: tuple[Tier, ...],
    tier_name: str | None,
    campaigns: list[BonusCampaign],
) -> tuple[EarnBonus, ...]:
    """The bonuses for a purchase, tier first, then campaigns in the order given.

    A member the rules service has not placed yet holds the ladder's entry tier; a tier
    name no longer in the ladder gives no tier bonus.
    """
    tier = next((t for t in ladder if t.name == tier_name), None)
    if tier_name is None and ladder:
        tier = ladder[0]
    bonuses = []
    if tier is not None and tier.earn_multiplier != 1:
        bonuses.append(EarnBonus("tier", tier.name, tier.earn_multiplier))
    held = tier.name if tier is not None else None
    for campaign in campaigns:
        if campaign.channels and purchase.channel not in campaign.channels:
            continue
        if campaign.store_ids and purchase.store_id not in campaign.store_ids:
            continue
        if campaign.tiers and held not in campaign.tiers:
            continue
        bonuses.append(
            EarnBonus("campaign", campaign.name, campaign.multiplier, campaign.categories)
        )
    return tuple(bonuses)
