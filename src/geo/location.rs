//! Our own vocabulary for places: coordinates, ISO country codes and continent codes.
//!
//! Everything outside `geo` speaks these types; nothing here knows about MMDB files.

use std::fmt;
use std::str::FromStr;

/// Mean Earth radius in kilometres (IUGG), for great-circle distances.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A point on the Earth in decimal degrees (WGS84).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coordinates {
    /// Latitude, -90 to 90.
    pub latitude: f64,
    /// Longitude, -180 to 180.
    pub longitude: f64,
}

impl Coordinates {
    /// Builds coordinates, or `None` when either value is out of range or not a number.
    pub fn new(latitude: f64, longitude: f64) -> Option<Self> {
        let valid = (-90.0..=90.0).contains(&latitude) && (-180.0..=180.0).contains(&longitude);
        valid.then_some(Self {
            latitude,
            longitude,
        })
    }

    /// Great-circle distance in kilometres (haversine formula, spherical Earth).
    pub fn distance_km(&self, other: &Coordinates) -> f64 {
        let (lat1, lat2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let d_lat = lat2 - lat1;
        let d_lon = (other.longitude - self.longitude).to_radians();
        let h = (d_lat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (d_lon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
    }
}

/// A point on the unit sphere, for computing many distances cheaply: the great-circle distance
/// between two points is `2 R asin(chord / 2)`, one square root and one arcsine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitVector([f64; 3]);

impl UnitVector {
    /// The point of `coordinates`.
    pub fn of(coordinates: &Coordinates) -> Self {
        let (lat, lon) = (
            coordinates.latitude.to_radians(),
            coordinates.longitude.to_radians(),
        );
        UnitVector([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()])
    }

    /// Great-circle distance in kilometres, as [`Coordinates::distance_km`] gives it.
    pub fn distance_km(&self, other: &UnitVector) -> f64 {
        2.0 * EARTH_RADIUS_KM * (self.chord(other) / 2.0).min(1.0).asin()
    }

    /// The straight-line distance to `other` through the unit sphere.
    pub fn chord(&self, other: &UnitVector) -> f64 {
        let [a, b, c] = self.0;
        let [x, y, z] = other.0;
        ((a - x) * (a - x) + (b - y) * (b - y) + (c - z) * (c - z)).sqrt()
    }

    /// The chord of a great-circle distance of `km` (at most the sphere's diameter, 2).
    pub fn chord_of_km(km: f64) -> f64 {
        2.0 * (km / (2.0 * EARTH_RADIUS_KM))
            .min(std::f64::consts::FRAC_PI_2)
            .sin()
    }

    /// The great-circle distance, in kilometres, of an angle `radians` at the centre.
    pub fn km_of_angle(radians: f64) -> f64 {
        EARTH_RADIUS_KM * radians
    }

    /// How much nearer `a` is than `b`, as the difference of their cosines seen from here:
    /// positive when `a` is nearer. Points at equal distance from `a` and `b` lie on the
    /// plane through the centre of the sphere normal to `a - b`, and this is the point's
    /// height above that plane, times `|a - b|`.
    pub fn nearer(&self, a: &UnitVector, b: &UnitVector) -> f64 {
        let [x, y, z] = self.0;
        x * (a.0[0] - b.0[0]) + y * (a.0[1] - b.0[1]) + z * (a.0[2] - b.0[2])
    }
}

/// An ISO 3166-1 alpha-2 country code, stored upper-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// The code as text, e.g. `GB`.
    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII letters, checked in `from_str`.
        std::str::from_utf8(&self.0).expect("country codes are ASCII")
    }
}

impl FromStr for CountryCode {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Ok(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => Err("not a two-letter ISO 3166-1 country code"),
        }
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A continent, by the two-letter codes MaxMind and GeoNames use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Continent {
    /// AF
    Africa,
    /// AN
    Antarctica,
    /// AS
    Asia,
    /// EU
    Europe,
    /// NA
    NorthAmerica,
    /// OC
    Oceania,
    /// SA
    SouthAmerica,
}

impl Continent {
    /// The two-letter code, e.g. `EU`.
    pub fn code(&self) -> &'static str {
        match self {
            Continent::Africa => "AF",
            Continent::Antarctica => "AN",
            Continent::Asia => "AS",
            Continent::Europe => "EU",
            Continent::NorthAmerica => "NA",
            Continent::Oceania => "OC",
            Continent::SouthAmerica => "SA",
        }
    }
}

impl FromStr for Continent {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "AF" => Continent::Africa,
            "AN" => Continent::Antarctica,
            "AS" => Continent::Asia,
            "EU" => Continent::Europe,
            "NA" => Continent::NorthAmerica,
            "OC" => Continent::Oceania,
            "SA" => Continent::SouthAmerica,
            _ => return Err("not a continent code (AF, AN, AS, EU, NA, OC, SA)"),
        })
    }
}

impl fmt::Display for Continent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Where a client is, as far as the geo database knows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Location {
    /// The point used for distances: the database's own coordinates, or the country's point.
    pub coordinates: Coordinates,
    /// The country, when known.
    pub country: Option<CountryCode>,
    /// The continent, when known.
    pub continent: Option<Continent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_match_known_city_pairs() {
        // Reference figures: great-circle distances on a 6371 km sphere, within 0.5 %.
        let cases = [
            ((51.5074, -0.1278), (40.7128, -74.0060), 5570.0), // London - New York
            ((-33.8688, 151.2093), (1.3521, 103.8198), 6300.0), // Sydney - Singapore
            ((0.0, 0.0), (0.0, 180.0), 20015.1),               // half the equator
            ((10.0, 10.0), (10.0, 10.0), 0.0),
        ];
        for ((lat1, lon1), (lat2, lon2), expected) in cases {
            let a = Coordinates::new(lat1, lon1).unwrap();
            let b = Coordinates::new(lat2, lon2).unwrap();
            let d = a.distance_km(&b);
            assert!(
                (d - expected).abs() <= expected * 0.005 + 0.01,
                "{lat1},{lon1} -> {lat2},{lon2}: {d} km, expected {expected}"
            );
        }
    }

    #[test]
    fn unit_vectors_give_the_same_distances() {
        let points = [
            (51.5074, -0.1278),
            (40.7128, -74.006),
            (-33.8688, 151.2093),
            (0.0, 180.0),
        ];
        for (lat1, lon1) in points {
            for (lat2, lon2) in points {
                let (a, b) = (
                    Coordinates::new(lat1, lon1).unwrap(),
                    Coordinates::new(lat2, lon2).unwrap(),
                );
                let by_vectors = UnitVector::of(&a).distance_km(&UnitVector::of(&b));
                assert!((by_vectors - a.distance_km(&b)).abs() < 1e-6, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn codes_parse_and_reject() {
        assert_eq!("gb".parse::<CountryCode>().unwrap().as_str(), "GB");
        assert!("GBR".parse::<CountryCode>().is_err());
        assert!("G1".parse::<CountryCode>().is_err());
        assert_eq!("eu".parse::<Continent>().unwrap(), Continent::Europe);
        assert!("XX".parse::<Continent>().is_err());
        assert!(Coordinates::new(91.0, 0.0).is_none());
        assert!(Coordinates::new(0.0, f64::NAN).is_none());
    }
}
