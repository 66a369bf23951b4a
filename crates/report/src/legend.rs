//! The legend every figure shares: a thick line in a series' colour as its key, a grey stub for
//! the dashed theory lines, and a half-transparent white box with a black border.

use crate::figure::FONT;
use plotters::coord::CoordTranslate;
use plotters::prelude::*;

/// A point on the drawing backend, in pixels (plotters' `BackendCoord`).
type Pixel = (i32, i32);

/// The key of a line series: a short thick stroke in its colour.
pub(crate) fn line_key(color: RGBColor) -> impl Fn(Pixel) -> PathElement<Pixel> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
}

/// Adds the legend entry `theory (dashed)` (a grey stub; the dashed lines take each series'
/// colour) without drawing anything on the chart.
pub(crate) fn theory_key<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
    CT::From: Clone + 'static,
{
    let gray = RGBColor(90, 90, 90);
    chart
        .draw_series(LineSeries::new(std::iter::empty::<CT::From>(), gray))?
        .label("theory (dashed)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 6, y)], gray.stroke_width(2)));
    Ok(())
}

/// Draws the labelled series' legend at `position` with labels of `font_size` pixels.
pub(crate) fn draw_legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
    font_size: i32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, font_size))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}
